"""Checkpoints: saving, loading and packaging trained networks.

A checkpoint is one ``.safetensors`` file: the network's weights, and in its metadata everything
colorizing needs besides (the resolved training config, the bins and class weights it was
trained with, the step, and for a packaged model its calibrated temperature). Training keeps a
second file beside it, ``last.state.pt``, with the optimizer, scheduler, RNG and progress
(:func:`save_training_state`); the two together resume a run exactly.

The authors' released eccv16 weights (a ``.pth`` state_dict) load here too
(:mod:`zhangcolor.authors`), and :func:`convert_weights` turns them into a checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from zhangcolor import __version__
from zhangcolor.config import build_config, config_dict
from zhangcolor.constants import TEMPERATURE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.files import atomic_write
from zhangcolor.models import ColorizationNet, build_model, unwrap
from zhangcolor.options import TrainConfig

#: The metadata "format" of a zhangcolor checkpoint.
FORMAT = "zhangcolor-checkpoint-1"


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("zhangcolor").joinpath("weights", "default.safetensors")))


def model_path(model: str | Path) -> Path:
    """``"default"`` (the shipped model) or a checkpoint's path, checked to exist."""
    if str(model) == "default":
        path = default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"the shipped default model is missing ({path}); reinstall")
        return path
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    return path


def model_temperature(metadata: dict[str, str]) -> float:
    """The T a checkpoint says to decode it at: its calibrated one (``package-model
    --temperature``), else the paper's 0.38."""
    return check_colorize_temperature(float(metadata.get("temperature", TEMPERATURE)))


def checkpoint_metadata(
    config: TrainConfig, bins: dict[str, Tensor], step: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """What a .safetensors checkpoint carries besides weights: all strings, as safetensors wants."""
    return {
        "format": FORMAT,
        "step": str(step),
        "zhangcolor_version": __version__,
        "config": json.dumps(config_dict(config)),
        "centers": json.dumps(bins["centers"].tolist()),
        "weights": json.dumps(bins["weights"].tolist()),
        **(extra or {}),
    }


def save_model(
    path: str | Path,
    model: nn.Module,
    config: TrainConfig,
    bins: dict[str, Tensor],
    step: int,
    *,
    extra: dict[str, str] | None = None,
) -> None:
    """The model's weights as .safetensors, with what colorizing needs in the metadata."""
    state = {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in unwrap(model).state_dict().items()
    }
    metadata = checkpoint_metadata(config, bins, step, extra)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata), durable=True)


def read_metadata(path: str | Path) -> dict[str, str]:
    """A checkpoint's metadata; ValueError when the file is not a readable one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable .safetensors checkpoint ({e})") from None


def checkpoint_step(path: Path) -> int | None:
    """The step a weights file was saved at; None when it is missing or unreadable."""
    try:
        return int(read_metadata(path).get("step", -1))
    except (ValueError, OSError):
        return None


def load_checkpoint(path: str | Path) -> tuple[ColorizationNet, TrainConfig, dict[str, Tensor]]:
    """A model, its training config and bins, from a ``.safetensors`` checkpoint, or from the
    authors' released eccv16 ``.pth``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".pth":
        from zhangcolor.authors import load_authors_eccv16

        return load_authors_eccv16(path)
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a zhangcolor checkpoint (no zhangcolor metadata)")
    config, bins = _parse_metadata(meta, path)
    check_architecture(path, config)  # before the network takes any memory
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} holds unreadable weights ({e})") from None
    model = build_model(config.model)
    model.load_state_dict(state)
    return model, config, bins


def _parse_metadata(meta: dict[str, str], path: Path) -> tuple[TrainConfig, dict[str, Tensor]]:
    """The training config and bins a checkpoint's metadata holds; ValueError naming what is
    damaged."""
    try:
        values = json.loads(meta["config"])
        if not isinstance(values, dict):
            raise TypeError(f"the config is a {type(values).__name__}, not a mapping")
        config = build_config(TrainConfig, values, f" in {path}")
        bins = {
            name: torch.tensor(json.loads(meta[name]), dtype=torch.float32)
            for name in ("centers", "weights")
        }
        model_temperature(meta)
    except KeyError as e:
        raise ValueError(f"{path}: corrupt zhangcolor metadata (no {e.args[0]!r})") from None
    except (ValueError, TypeError) as e:  # json's errors are ValueErrors
        raise ValueError(f"{path}: corrupt zhangcolor metadata ({e})") from None
    centers, weights = bins["centers"], bins["weights"]
    if centers.ndim != 2 or centers.shape[1] != 2 or weights.shape != centers.shape[:1]:
        raise ValueError(
            f"{path}: corrupt zhangcolor metadata (centers {tuple(centers.shape)} and weights "
            f"{tuple(weights.shape)}; expected (Q, 2) and (Q,))"
        )
    config.model.pretrained = False  # the weights come from the checkpoint
    return config, bins


def check_architecture(path: str | Path, config: TrainConfig) -> None:
    """Raise ValueError unless the network ``config`` describes has exactly the weights' names
    and shapes in the file's header. The network is built on the meta device, so a damaged
    metadata (an eccv16 of width 200 is 12 GB) allocates nothing."""
    with safe_open(str(path), framework="pt") as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    with torch.device("meta"):
        model = build_model(config.model)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if found == expected:
        return
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    differ = [n for n in expected.keys() & found.keys() if expected[n] != found[n]]
    problems = [f"{len(missing)} weights missing"] if missing else []
    problems += [f"{len(unexpected)} unexpected"] if unexpected else []
    if differ:
        first = sorted(differ)[0]
        problems.append(
            f"{len(differ)} of another shape, e.g. {first} is {found[first]} in the file and "
            f"{expected[first]} in the network"
        )
    model_config = config.model
    raise ValueError(
        f"{path}: its metadata describes a network ({model_config.backbone}, "
        f"{_architecture_words(model_config)}) that its weights do not fit: "
        f"{'; '.join(problems)}"
    )


def _architecture_words(model_config) -> str:
    if model_config.backbone == "eccv16":
        return f"width {model_config.width:g}, {model_config.head.value} head"
    return f"{model_config.encoder}, {model_config.head.value} head"


def package_model(
    source: str | Path,
    target: str | Path,
    *,
    half: bool = False,
    temperature: float | None = None,
    notes: dict | None = None,
) -> dict:
    """Copy a checkpoint for shipping, optionally with its float weights in fp16 and a calibrated
    ``temperature`` in its metadata (colorize's default for it), and write a provenance JSON
    beside it. Returns the provenance."""
    source, target = Path(source), Path(target)
    if source.suffix == ".pth":
        raise ValueError(f"{source} is the authors' release: convert it with convert-weights first")
    load_checkpoint(source)  # refuse anything that is not a loadable zhangcolor checkpoint
    metadata = read_metadata(source)
    if temperature is not None:
        metadata["temperature"] = repr(float(temperature))
    state = load_file(str(source))
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata=metadata), durable=True)
    provenance = {
        "source": str(source),
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "dtype": "float16" if half else "float32",
        "step": int(metadata.get("step", -1)),
        "temperature": temperature,
        "config": json.loads(metadata["config"]),
        "zhangcolor_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(notes or {}),
    }
    target.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def convert_weights(source: str | Path, target: str | Path) -> None:
    """Write the authors' eccv16 release ``source`` as a zhangcolor ``.safetensors`` checkpoint at
    ``target``: classification head, the file's bins (the paper's) and class weights of one."""
    from zhangcolor.authors import load_authors_eccv16

    target = Path(target)
    if target.suffix != ".safetensors":
        raise ValueError(f"the target must be a .safetensors file, got {target}")
    model, config, bins = load_authors_eccv16(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_model(target, model, config, bins, step=0)


# ----------------------------------------------------------------------------- training state


#: What every training state holds.
_STATE_KEYS = frozenset({"optimizer", "scheduler", "progress", "rng"})


def save_training_state(path: Path, state: dict) -> None:
    """The trainer's half of a checkpoint (optimizer, scheduler, RNG, progress), atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp), durable=True)


def load_training_state(path: Path) -> dict:
    """What :func:`save_training_state` wrote; plain tensors and numbers (``weights_only``).
    ValueError when the file is empty, damaged or not a training state."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises EOFError, pickle and zip errors for damaged files
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not _STATE_KEYS <= state.keys():
        raise ValueError(f"{path} is not a zhangcolor training state")
    return state
