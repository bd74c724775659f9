"""Write docs/cli.md, the command-line reference, from the click commands (their docstrings and
options) and the config dataclasses' field metadata (each field's help, default and rule).

    python docs/make_cli_reference.py

tests/test_project.py checks that the committed docs/cli.md is what this writes, so a changed
option or help text shows up there in the same commit.
"""

from __future__ import annotations

import dataclasses
import inspect
from enum import Enum
from pathlib import Path

import click

from zhangcolor.cli import main
from zhangcolor.config import field_default, shipped_configs
from zhangcolor.options import HintConfig, ModelConfig, PriorConfig, ServeConfig, TrainConfig

TARGET = Path(__file__).resolve().parent / "cli.md"
#: The config dataclasses a YAML (--config) fills, with the command that reads it and its
#: sections (each a nested dataclass).
CONFIG_FILES = [
    ("train", TrainConfig, {"model": ModelConfig, "hints": HintConfig}),
    ("build-bins", PriorConfig, {}),
    ("serve", ServeConfig, {}),
]


def cell(text: str) -> str:
    """``text`` fit for one cell of a Markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def commands(group: click.Group, ctx: click.Context):
    """Each command of ``group`` with its context, in the order they are defined, a subgroup's
    commands after it."""
    for name, command in group.commands.items():
        sub = click.Context(command, info_name=name, parent=ctx)
        yield command, sub
        if isinstance(command, click.Group):
            yield from commands(command, sub)


def option_default(param: click.Option) -> str:
    """The default an option's row shows: what --help shows, "off" for a flag."""
    if param.required:
        return "required"
    if isinstance(param.show_default, str):
        return param.show_default
    if param.is_flag:
        return "off"
    if param.show_default and param.default is not None:
        values = param.default if param.multiple else [param.default]
        return ", ".join(str(v) for v in values)
    return ""


def command_section(command: click.Command, ctx: click.Context) -> list[str]:
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## `{ctx.command_path} {usage}`", "", inspect.cleandoc(command.help), ""]
    rows = [
        (param.get_help_record(ctx)[0], option_default(param), param.help or "")
        for param in command.get_params(ctx)
        if isinstance(param, click.Option) and param.name != "help"
    ]
    if rows:
        lines += ["| option | default | meaning |", "|---|---|---|"]
        lines += [f"| `{cell(o)}` | {cell(d) or '–'} | {cell(h)} |" for o, d, h in rows]
        lines.append("")
    return lines


def yaml_value(value) -> str:
    """A default as YAML writes it: null, true, [0.9, 0.99], a head's name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return f"[{', '.join(yaml_value(v) for v in value)}]"
    return str(value)


def valid_values(rule) -> str:
    """A field's rule in words: "a number > 0", "one of cosine, constant"."""
    if rule is None:
        return ""
    return rule[1].removeprefix("must be ").replace("unknown; valid: ", "one of ")


def field_rows(cls: type, prefix: str, flags: dict[str, str]) -> list[str]:
    rows = []
    for spec in dataclasses.fields(cls):
        if dataclasses.is_dataclass(spec.default_factory):
            continue  # a section: its fields follow
        default = spec.metadata.get("shown") or yaml_value(field_default(cls, spec.name))
        flag = flags.get(spec.name) or flags.get(f"no_{spec.name}") or ""
        rows.append(
            f"| `{prefix}{spec.name}` | {cell(default)} | {f'`{flag}`' if flag else ''} | "
            f"{cell(spec.metadata['help'])} | {cell(valid_values(spec.metadata['rule']))} |"
        )
    return rows


def config_section(ctx: click.Context) -> list[str]:
    names = ", ".join(f"`{name}`" for name in shipped_configs())
    lines = [
        "## Config files",
        "",
        "`--config` takes a YAML file, or the name of a config shipped in `zhangcolor/configs/` "
        f"({names}). A YAML sets any of the fields below; a field it leaves out keeps its "
        "default, and a flag overrides both. `train` saves the resolved config as "
        "`RUN/config.yaml`. The shipped YAMLs hold only the values that differ from these "
        "defaults.",
        "",
    ]
    for name, cls, sections in CONFIG_FILES:
        command = main.commands[name]
        flags = {p.name: p.opts[0] for p in command.get_params(ctx) if isinstance(p, click.Option)}
        lines += [
            f"### `zhangcolor {name} --config`: `{cls.__name__}`",
            "",
            "| field | default | flag | meaning | valid |",
            "|---|---|---|---|---|",
            *field_rows(cls, "", flags),
        ]
        for section, section_cls in sections.items():
            lines += field_rows(section_cls, f"{section}.", flags)
        lines.append("")
    return lines


def reference() -> str:
    """docs/cli.md's text."""
    ctx = click.Context(main, info_name="zhangcolor")
    lines = [
        "# Command-line reference",
        "",
        "<!-- Written by `python docs/make_cli_reference.py` from the commands and the config "
        "fields' metadata (zhangcolor/options.py); edit those, not this file. -->",
        "",
        inspect.cleandoc(main.help),
        "",
        "`zhangcolor --help` lists the commands, `zhangcolor COMMAND --help` shows what this "
        "page shows for one, and `zhangcolor --version` prints the version.",
        "",
    ]
    for command, sub in commands(main, ctx):
        if not isinstance(command, click.Group):
            lines += command_section(command, sub)
    lines += config_section(ctx)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    TARGET.write_text(reference(), encoding="utf-8")
    print(f"wrote {TARGET}")
