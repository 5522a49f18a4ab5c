"""Command-line options generated from a pydantic config class (as TRL's HfArgumentParser does from its
dataclasses): each field is one `--kebab-name` option with the field's type, default and description, so a
default or a help text is written once, in the config. Nested configs (a model's shape, the prompt) are
flattened into options of their own names; `rename` gives a field (`name`, or `nested.name`) another option
name. A list field is a repeatable option, or one comma-separated value where the field says
`json_schema_extra={"comma_separated": True}` (`--codebooks 64,64,64`); `{"argument": True}` makes a field a
positional argument."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sid_index.errors import make_config


def _cli_type(annotation: Any) -> Any:
    """The type typer parses: Literal choices as text (the config checks them), Optional kept."""
    origin = get_origin(annotation)
    if origin is Literal:
        return type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _cli_type(inner[0]) | None
    return annotation


def _help(field, annotation: Any) -> str:
    text = field.description or ""
    if get_origin(annotation) is Literal:
        text = f"{text} ({' | '.join(map(str, get_args(annotation)))})".strip()
    return text[:1].upper() + text[1:] if text else ""


def _comma_separated(field) -> bool:
    return bool((field.json_schema_extra or {}).get("comma_separated"))


def _parameter(name: str, field, flag: str) -> inspect.Parameter:
    annotation = field.annotation
    kind = str | None if _comma_separated(field) else _cli_type(annotation)
    decl = f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}"
    default = field.default if field.default is not PydanticUndefined else inspect.Parameter.empty
    if field.default_factory is not None:
        default = field.default_factory()
    if _comma_separated(field) and isinstance(default, list | tuple):
        default = ",".join(map(str, default))  # as it is typed
    if (field.json_schema_extra or {}).get("argument"):
        option = typer.Argument(help=_help(field, annotation), show_default=default is not None)
    else:
        option = typer.Option(decl, help=_help(field, annotation), show_default=default is not None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, option])


def config_parameters(cls: type[BaseModel], flatten: tuple[str, ...] = (), rename: dict[str, str] | None = None,
                      fixed: tuple[str, ...] = ()) -> tuple[list[inspect.Parameter], dict[str, tuple[str, ...]]]:
    """One keyword parameter per field (required fields first, as Python wants), and where each goes in the
    config: option name -> field path. Fields of the nested configs named in `flatten` become options of their
    own (or `rename[nested.field]`) names; the fields in `fixed` are not options (the command sets them: its
    default)."""
    rename = rename or {}
    params: list[inspect.Parameter] = []
    paths: dict[str, tuple[str, ...]] = {}
    for name, field in cls.model_fields.items():
        if name in fixed:
            continue
        if name in flatten:
            nested = field.annotation
            for sub, sub_field in nested.model_fields.items():
                option = rename.get(f"{name}.{sub}", sub)
                params.append(_parameter(option, sub_field, option.replace("_", "-")))
                paths[option] = (name, sub)
            continue
        option = rename.get(name, name)
        params.append(_parameter(option, field, option.replace("_", "-")))
        paths[option] = (name,)
    if len(paths) != len(params):
        raise ValueError(f"{cls.__name__}: two options share a name")
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    return params, paths


def _field(cls: type[BaseModel], path: tuple[str, ...]):
    field = cls.model_fields[path[0]]
    return field if len(path) == 1 else _field(field.annotation, path[1:])


def config_command(cls: type[BaseModel], what: str, run: Callable[[Any], None], doc: str,
                   flatten: tuple[str, ...] = (), rename: dict[str, str] | None = None,
                   fixed: tuple[str, ...] = ()) -> Callable[..., None]:
    """A typer command whose options are `cls`'s fields (but `fixed`); it builds the config (a bad value: one
    line naming the option, `make_config`) and calls `run(config)`."""
    params, paths = config_parameters(cls, flatten, rename, fixed)
    defaults = {p.name: p.default for p in params}
    comma = {option for option, path in paths.items() if _comma_separated(_field(cls, path))}
    flags = {path: option for option, path in paths.items()}

    def command(**options: Any) -> None:
        values: dict[str, Any] = {}
        for option, value in options.items():
            if isinstance(value, list | tuple) and not value:  # a repeatable option given no value: its default
                value = defaults[option]
            if option in comma and isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]  # the config parses each
            *groups, key = paths[option]
            node = values
            for group in groups:
                node = node.setdefault(group, {})
            node[key] = value
        run(make_config(cls, what, flags=flags, **values))

    command.__signature__ = inspect.Signature(params)  # typer reads the options from here
    command.__doc__ = doc
    return command
