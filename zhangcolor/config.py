"""Config dataclasses from YAML, with command-line overrides (YAML gives defaults, flags win)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then non-None overrides.

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
    values.update({k: v for k, v in overrides.items() if v is not None})
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        where = f" in {path}" if path is not None else ""
        raise ValueError(
            f"unknown option(s){where}: {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict, ready for YAML or JSON."""
    return dataclasses.asdict(config)
