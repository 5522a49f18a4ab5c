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
    sizes: list[int] | None = Field(None, description="comma-separated", json_schema_extra={"comma_separated": True})
    shape: Shape = Shape()


def app_for(seen: list) -> typer.Typer:
    app = typer.Typer()
    app.command("go")(config_command(Toy, "toy", seen.append, "Run the toy.", flatten=("shape",),
                                     rename={"shape.num_layers": "layers", "sizes": "codebooks"}))
    app.command("other")(lambda: None)  # a second command: `go` keeps its name
    return app


def test_options_build_the_config_with_the_fields_defaults():
    seen: list = []
    res = CliRunner().invoke(app_for(seen), ["go", "--out", "x"])
    assert res.exit_code == 0, res.output
    assert seen == [Toy(out=Path("x"))] and seen[0].weights is None  # a repeatable option not given: its default
    res = CliRunner().invoke(app_for(seen), ["go", "--out", "y", "--rate", "0.1", "--steps", "3", "--mode", "slow",
                                             "--no-tlgd", "--width", "16", "--layers", "5", "--weights", "0",
                                             "--weights", "2.5", "--codebooks", "64, 32,16"])
    assert res.exit_code == 0, res.output
    want = Toy(out=Path("y"), rate=0.1, steps=3, mode="slow", tlgd=False, weights=[0.0, 2.5], sizes=[64, 32, 16],
               shape=Shape(width=16, num_layers=5))
    assert seen[-1] == want


def test_help_comes_from_the_fields():
    res = CliRunner().invoke(app_for([]), ["go", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for text in ("Run the toy.", "--out", "Where results go", "--rate", "A learning rate", "[default: 0.5]",
                 "--mode", "Speed (fast | slow)", "--tlgd", "--no-tlgd", "--width", "How wide", "--layers"):
        assert text in res.output, text
    assert "--num-layers" not in res.output and "--shape" not in res.output and "--sizes" not in res.output


def test_bad_values_are_refused_naming_the_option():
    res = CliRunner().invoke(app_for([]), ["go"])  # a required option missing: click's usage error
    assert res.exit_code == 2 and "--out" in res.output
    res = CliRunner().invoke(app_for([]), ["go", "--out", "x", "--rate", "-1"])
    assert isinstance(res.exception, RadgrError) and "invalid toy settings: --rate: Input should be greater" in str(
        res.exception)
    res = CliRunner().invoke(app_for([]), ["go", "--out", "x", "--mode", "medium"])
    assert isinstance(res.exception, RadgrError) and "--mode: Input should be 'fast' or 'slow'" in str(res.exception)
    res = CliRunner().invoke(app_for([]), ["go", "--out", "x", "--codebooks", "8,x"])  # named as the option is
    assert isinstance(res.exception, RadgrError) and "invalid toy settings: --codebooks: Input should be a valid " \
        "integer" in str(res.exception)
    res = CliRunner().invoke(app_for([]), ["go", "--out", "x", "--layers", "0"])  # a nested field: its option
    assert isinstance(res.exception, RadgrError) and "invalid toy settings: --layers: Input should be greater" in str(
        res.exception)


@pytest.mark.parametrize("command, config", [(["data", "synth"], "sid_index.data.cli.SynthCommand"),
                                             (["data", "homedepot"], "sid_index.data.cli.HomeDepotCommand"),
                                             (["data", "import"], "sid_index.data.cli.ImportCommand"),
                                             (["index", "build"], "sid_index.config.IndexConfig"),
                                             (["train", "sft"], "trainer.config.SFTConfig"),
                                             (["train", "rad-dpo"], "trainer.config.RadDPOConfig"),
                                             (["train", "dpo"], "trainer.config.DPOConfig"),
                                             (["train", "simpo"], "trainer.config.SimPOConfig"),
                                             (["train", "orpo"], "trainer.config.ORPOConfig"),
                                             (["eval"], "trainer.evaluate.EvalConfig"),
                                             (["bench", "peers"], "trainer.peers.PeersConfig")])
def test_every_config_field_is_an_option(command, config):
    """radgr data synth, index build, train sft / rad-dpo / dpo / simpo / orpo, eval and bench peers: one option
    per config field (nested ones too; a preference command's method is its name, not an option)."""
    import importlib

    from radgr.cli import cli

    module, name = config.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    res = CliRunner().invoke(cli, [*command, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    renamed = {"num_layers": "layers", "align": "prompt-align", "dataset": "data", "codebook_sizes": "codebooks"}
    names = [n for n, f in cls.model_fields.items() if n != "method" and not (f.json_schema_extra or {}).get("argument")
             and not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))]
    for field in cls.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):  # flattened: its fields
            names += list(field.annotation.model_fields)
    for name in names:
        assert f"--{renamed.get(name, name).replace('_', '-')}" in res.output, name
    assert "--method" not in res.output or command == ["eval"]


def test_each_preference_method_has_its_own_defaults_and_options():
    """One config class per method (as TRL's): its own beta default shown in its command's help, and another
    method's options refused; `pref_config` routes a grid's shared options to the methods that have them."""
    from radgr.cli import cli
    from sid_index.errors import RadgrError
    from trainer.config import PREF_CONFIGS, DPOConfig, RadDPOConfig, SimPOConfig, pref_config

    betas = {"rad-dpo": 1.0, "dpo": 0.1, "simpo": 2.0, "orpo": 0.1}  # the papers' (TRL's for DPO) defaults
    assert {m: c.model_fields["beta"].default for m, c in PREF_CONFIGS.items()} == betas
    for method, beta in betas.items():
        res = CliRunner().invoke(cli, ["train", method, "--help"], env={"COLUMNS": "250"})
        line = next(ln for ln in res.output.splitlines() if "--beta" in ln)
        assert f"[default: {beta}]" in line, (method, line)
    res = CliRunner().invoke(cli, ["train", "dpo", "--data", "d", "--index", "i", "--out", "o", "--init", "s",
                                   "--no-tlgd"])
    assert res.exit_code == 2 and "No such option" in res.output

    base = dict(data="d", index="i", out="o", init="s")
    shared = dict(rdrw_warmup=7, gamma=0.5, lr=3e-4)
    rad = pref_config("x", **base, **shared)
    assert type(rad) is RadDPOConfig and rad.rdrw_warmup == 7 and rad.lr == 3e-4 and not hasattr(rad, "gamma")
    dpo = pref_config("x", **base, **shared, method="dpo")
    assert type(dpo) is DPOConfig and dpo.beta == 0.1 and not hasattr(dpo, "rdrw_warmup")
    simpo = pref_config("x", **base, **shared, method="simpo")
    assert type(simpo) is SimPOConfig and simpo.gamma == 0.5
    with pytest.raises(RadgrError, match="no preference method has the option.s. rdrw_warmupp"):
        pref_config("x", **base, rdrw_warmupp=7)
    with pytest.raises(RadgrError, match="method 'kto'"):
        pref_config("x", **base, method="kto")
    with pytest.raises(RadgrError, match="--beta"):
        pref_config("x", **base, method="orpo", beta=-1)
