"""Config dataclasses from YAML, with command-line overrides (YAML gives defaults, flags win)."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


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
        f"no config file {str(value)!r}, and no shipped config of that name; "
        f"shipped: {', '.join(shipped)}"
    )


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then non-None overrides
    (a dict override merges into the YAML's section of that name).

    Unknown keys raise ValueError listing the valid ones.
    """
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
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


def build_config(cls: type[C], values: dict[str, Any], where: str) -> C:
    """``cls(**values)``, building nested config dataclasses from nested mappings."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s){where}: {', '.join(unknown)}; valid: {', '.join(fields)}"
        )
    for name, value in values.items():
        factory = fields[name].default_factory
        if isinstance(value, dict) and factory is not dataclasses.MISSING:
            nested = factory()
            if dataclasses.is_dataclass(nested):
                merged = {**config_dict(nested), **value}
                values[name] = build_config(type(nested), merged, f" in {name}{where}")
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict, ready for YAML or JSON."""
    return dataclasses.asdict(config)
