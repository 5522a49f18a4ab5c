"""Options generated from a config class: names, types, defaults and help come from the fields; nested
configs flatten (with renames); the built config equals the one written by hand; bad values are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import typer
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from sid_index.config_cli import config_command
from sid_index.errors import RadgrError


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(8, ge=1, description="how wide")
    num_layers: int = Field(2, ge=1)


class Toy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="where results go")
    rate: float = Field(0.5, gt=0, description="a learning rate")
    steps: int | None = Field(None, ge=1)
    mode: Literal["fast", "slow"] = Field("fast", description="speed")
    tlgd: bool = Field(True, description="a switch on by default")
    weights: list[float] | None = Field(None, description="repeatable")
    shape: Shape = Shape()


def app_for(seen: list) -> typer.Typer:
    app = typer.Typer()
    app.command("go")(config_command(Toy, "toy", seen.append, "Run the toy.", flatten=("shape",),
                                     rename={"shape.num_layers": "layers"}))
    app.command("other")(lambda: None)  # a second command: `go` keeps its name
    return app


def test_options_build_the_config_with_the_fields_defaults():
    seen: list = []
    res = CliRunner().invoke(app_for(seen), ["go", "--out", "x"])
    assert res.exit_code == 0, res.output
    assert seen == [Toy(out=Path("x"))] and seen[0].weights is None  # a repeatable option not given: its default
    res = CliRunner().invoke(app_for(seen), ["go", "--out", "y", "--rate", "0.1", "--steps", "3", "--mode", "slow",
                                             "--no-tlgd", "--width", "16", "--layers", "5", "--weights", "0",
                                             "--weights", "2.5"])
    assert res.exit_code == 0, res.output
    want = Toy(out=Path("y"), rate=0.1, steps=3, mode="slow", tlgd=False, weights=[0.0, 2.5],
               shape=Shape(width=16, num_layers=5))
    assert seen[-1] == want


def test_help_comes_from_the_fields():
    res = CliRunner().invoke(app_for([]), ["go", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for text in ("Run the toy.", "--out", "Where results go", "--rate", "A learning rate", "[default: 0.5]",
                 "--mode", "Speed (fast | slow)", "--tlgd", "--no-tlgd", "--width", "How wide", "--layers"):
        assert text in res.output, text
    assert "--num-layers" not in res.output and "--shape" not in res.output


def test_bad_values_are_refused_naming_the_option():
    res = CliRunner().invoke(app_for([]), ["go"])  # a required option missing: click's usage error
    assert res.exit_code == 2 and "--out" in res.output
    res = CliRunner().invoke(app_for([]), ["go", "--out", "x", "--rate", "-1"])
    assert isinstance(res.exception, RadgrError) and "invalid toy settings: --rate: Input should be greater" in str(
        res.exception)
    res = CliRunner().invoke(app_for([]), ["go", "--out", "x", "--mode", "medium"])
    assert isinstance(res.exception, RadgrError) and "--mode: Input should be 'fast' or 'slow'" in str(res.exception)


@pytest.mark.parametrize("command, config", [(["train", "sft"], "trainer.config.SFTConfig"),
                                             (["train", "pref"], "trainer.config.PrefConfig"),
                                             (["eval"], "trainer.evaluate.EvalConfig"),
                                             (["bench", "peers"], "trainer.peers.PeersConfig")])
def test_every_config_field_is_an_option(command, config):
    """radgr train sft / pref, radgr eval and bench peers: one option per config field (nested ones too)."""
    import importlib

    from radgr.cli import cli

    module, name = config.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    res = CliRunner().invoke(cli, [*command, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    renamed = {"num_layers": "layers", "align": "prompt-align"}
    names = [n for n, f in cls.model_fields.items() if not isinstance(f.default, BaseModel)]
    for nested in ("scratch", "prompt"):
        if nested in cls.model_fields:
            names += list(type(cls.model_fields[nested].default).model_fields)
    for name in names:
        assert f"--{renamed.get(name, name).replace('_', '-')}" in res.output, name
