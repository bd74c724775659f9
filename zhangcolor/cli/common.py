"""What the commands share: the consoles, options filled from config fields, and ``build``, the
one place a command's flags and YAML become a checked config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import rich_click as click
from rich.console import Console

from zhangcolor.config import field_help, shown_default
from zhangcolor.options import DEVICES, PRECISIONS, ColorizeConfig

console = Console(stderr=True)  # progress, warnings
out = Console()  # results


def field_option(cls: type, name: str, *decls: str, **kwargs: Any):
    """An option that fills field ``name`` of config dataclass ``cls``: None unless given, so a
    YAML config's value stands. Its help is the field's own (a ``help`` here only where the flag
    needs other words), with the dataclass's default shown (flags: off)."""
    kwargs.setdefault("help", field_help(cls, name))
    if not kwargs.get("is_flag"):
        kwargs.setdefault("show_default", shown_default(cls, name))
    return click.option(*decls, name, default=None, **kwargs)


def _resolve_config(ctx, param, value):
    from zhangcolor.config import resolve_config

    if value is None:
        return None
    try:
        return resolve_config(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def config_option(example: str, default: str | None = None):
    """--config: a YAML file, or the name of a config shipped with zhangcolor."""
    return click.option(
        "--config",
        "config_path",
        callback=_resolve_config,
        default=default,
        show_default=default is not None,
        help=f"YAML of defaults: a file, or a shipped config by name (e.g. {example}); "
        "the flags below override it.",
    )


def build(cls: type, config_path: Path | None = None, **flags):
    """The config from defaults, YAML and flags; a bad value is a usage error (status 2) that
    names the option it came from: the flag when one was given, else --config."""
    from zhangcolor.config import load_config

    try:
        return load_config(cls, config_path, **flags)
    except (ValueError, TypeError) as e:
        message = re.sub(r"^invalid \w+Config: ", "", str(e))  # the class is no user's word
        raise click.BadParameter(
            message, param_hint=_culprit(message, config_path, flags)
        ) from None


def _culprit(message: str, config_path: Path | None, flags: dict) -> str | None:
    """The option a config error names: the flag of a field the message names and the user gave
    (``temperature=0`` -> --temperature; "the regression head ..." -> --head), else --config
    when the user gave one; None leaves click to say "Invalid value"."""
    given = {k for k, v in flags.items() if v is not None}
    given |= {k for k, v in flags.items() if isinstance(v, dict) for k in v}  # model={...}
    ctx = click.get_current_context(silent=True)
    params = [p for p in ctx.command.params if p.name in given] if ctx else []
    named = re.findall(r"\b(\w+)=", message)
    hints = [p.get_error_hint(ctx) for p in params if p.name in named]
    hints = hints or [p.get_error_hint(ctx) for p in params if re.search(rf"\b{p.name}\b", message)]
    if hints:
        return ", ".join(hints)
    explicit = ctx is not None and ctx.get_parameter_source("config_path") not in (
        None,
        click.core.ParameterSource.DEFAULT,
    )
    if config_path is not None and explicit:
        return f"--config ({config_path})"
    return None


def inference_options(command):
    """--device, --precision and --size, shared by the commands that run a trained model."""
    options = [
        field_option(ColorizeConfig, "device", "--device", type=click.Choice(DEVICES)),
        field_option(ColorizeConfig, "precision", "--precision", type=click.Choice(PRECISIONS)),
        field_option(ColorizeConfig, "size", "--size", type=int),
    ]
    for option in reversed(options):
        command = option(command)
    return command
