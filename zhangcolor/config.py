"""Config dataclasses from YAML, with command-line overrides (YAML gives defaults, flags win), the
configs shipped with zhangcolor, and each field's one-line help and rule, which the config checks
when made and the command line shows.

A config file may come from anyone, so its YAML is read with limits: no aliases (a 331-byte file
of nested aliases stands for billions of values), at most :data:`MAX_DEPTH` levels of nesting,
and every message shows a value cut to a few dozen characters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")

#: The deepest nesting a config file may have: configs have two levels (a section, its keys); a
#: deeper file (20,000 levels) would end in a RecursionError.
MAX_DEPTH = 32
#: The most characters of a value, or of a list of names, that a message shows.
SHOWN = 60

# ----------------------------------------------------------------------------- field checks

#: A rule for one field: a test of the value, and the valid range in words.
Rule = tuple[Callable[[Any], bool], str]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    return (lambda v: _number(v) and v >= low), f"must be a number ≥ {low:g}"


def positive() -> Rule:
    return (lambda v: _number(v) and v > 0), "must be a number > 0"


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if not _number(v):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return ok, f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def integer(low: int, high: int | None = None) -> Rule:
    def ok(v: Any) -> bool:
        is_int = isinstance(v, int) and not isinstance(v, bool)
        return is_int and v >= low and (high is None or v <= high)

    words = f"an integer ≥ {low}" if high is None else f"an integer in [{low}, {high}]"
    return ok, f"must be {words}"


def text() -> Rule:
    return (lambda v: isinstance(v, str) and v != ""), "must be a non-empty string"


def one_of(choices: Sequence[str]) -> Rule:
    return (lambda v: v in choices), f"unknown; valid: {', '.join(choices)}"


def optional(rule: Rule) -> Rule:
    test, words = rule
    return (lambda v: v is None or test(v)), f"{words}, or null"


# ----------------------------------------------------------------------------- config fields


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    rule: Rule | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    shown: str | None = None,
) -> Any:
    """A config dataclass field that carries its meaning: its one-line ``help`` (the command
    line's --help and docs/cli.md), its ``rule`` (checked by :func:`check_config`) and, where
    the default depends on the machine, how to show it (``shown``, e.g. "one per core")."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"help": help, "rule": rule, "shown": shown},
    )


def field_help(cls: type, name: str) -> str:
    """The one-line help of field ``name`` of config dataclass ``cls``."""
    return _field(cls, name).metadata["help"]


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of config dataclass ``cls``."""
    spec = _field(cls, name)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def shown_default(cls: type, name: str) -> str:
    """The default of field ``name`` of ``cls`` as --help shows it: its ``shown`` words, an
    enum's name, ``none`` for None."""
    shown = _field(cls, name).metadata.get("shown")
    if shown is not None:
        return shown
    default = field_default(cls, name)
    return "none" if default is None else str(getattr(default, "value", default))


def _field(cls: type, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def check_config(config: Any) -> None:
    """Check every field of ``config`` by the rule in its metadata, and raise one ValueError
    naming each field that breaks its rule, with the value it got and the valid range, e.g.
    ``invalid TrainConfig: lr=-1 (must be a number > 0)``."""
    problems = []
    for spec in dataclasses.fields(config):
        rule, value = spec.metadata.get("rule"), getattr(config, spec.name)
        if rule is not None and not rule[0](value):
            problems.append(f"{spec.name}={short(value)} ({rule[1]})")
    if problems:
        raise ValueError(f"invalid {type(config).__name__}: {'; '.join(problems)}")


def short(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)`` for a message, never longer than ``limit`` characters: a value read from
    a file may be a megabyte of text or a structure of billions of elements (whose repr would
    never end), so a container is shown by its type and size, and only scalars by their repr."""
    if isinstance(value, list | tuple | dict | set):
        shown = f"a {type(value).__name__} of {len(value)}"
        if isinstance(value, tuple) and len(value) <= 4 and all(map(_scalar, value)):
            shown = repr(value)
    else:
        shown = repr(value) if _scalar(value) else f"a {type(value).__name__}"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str | Enum | Path)


def names(items: Sequence[Any], limit: int = SHOWN) -> str:
    """Names joined by commas for a message, cut after about ``limit`` characters with a count
    of the rest."""
    shown: list[str] = []
    for item in items:
        text = str(item) if len(str(item)) <= limit else str(item)[: limit - 1] + "…"
        if shown and len(", ".join([*shown, text])) > limit:
            return ", ".join(shown) + f" and {len(items) - len(shown)} more"
        shown.append(text)
    return ", ".join(shown)


# ----------------------------------------------------------------------------- YAML


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing aliases and nesting deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not accepted in a config; write the value out",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep; a config has two",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml(text: str) -> Any:
    """A YAML document read with the limits of config files (no aliases, at most
    :data:`MAX_DEPTH` levels); a yaml.YAMLError for anything else."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def shipped_configs() -> dict[str, Path]:
    """The YAML configs installed with zhangcolor (``zhangcolor/configs``), by name."""
    folder = Path(str(resources.files("zhangcolor").joinpath("configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config(value: str | Path) -> Path:
    """A ``--config`` value as a file: a YAML file's path, or the name of a shipped config
    (``unet-effnet-classification``, with or without ``.yaml``). Anything else is a ValueError
    that lists the shipped names."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name.removesuffix(".yaml") if path.parent == Path(".") else None
    if name in shipped:
        return shipped[name]
    raise ValueError(
        f"no config file {short(str(value))}, and no shipped config of that name; "
        f"shipped: {', '.join(shipped)}"
    )


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then non-None overrides
    (a dict override merges into the YAML's section of that name).

    Unknown keys raise ValueError listing the valid ones; so does a YAML syntax error, with
    where it is, and an alias or a nesting deeper than :data:`MAX_DEPTH`.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = read_yaml(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a UTF-8 text file") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML ({_yaml_problem(e)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(
                f"{path}: expected a mapping of option: value, got {type(loaded).__name__}"
            )
        values.update(loaded or {})
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}  # a flag overrides one key of a YAML section
        elif value is not None:
            values[key] = value
    return build_config(cls, values, f" in {path}" if path is not None else "")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong with a YAML file, and where: ``line 2, column 3: expected ...``."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or problem is None:
        return str(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def build_config(cls: type[C], values: dict[str, Any], where: str) -> C:
    """``cls(**values)``, building nested config dataclasses from nested mappings."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ValueError(f"unknown option(s){where}: {names(unknown)}; valid: {', '.join(fields)}")
    for name, value in values.items():
        factory = fields[name].default_factory
        nested = factory() if factory is not dataclasses.MISSING else None
        if not dataclasses.is_dataclass(nested) or isinstance(value, type(nested)):
            continue
        if not isinstance(value, dict):
            raise ValueError(
                f"{name}{where} must be a mapping of its options (e.g. {name}: "
                f"{{{next(iter(config_dict(nested)))}: ...}}), not {short(value)}"
            )
        merged = {**config_dict(nested), **value}
        values[name] = build_config(type(nested), merged, f" in {name}{where}")
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data (enums as their names, tuples as lists), ready for
    YAML or JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))
