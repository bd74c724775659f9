"""Model files in zhangcolor's own format, and the training-state file.

A model file is one ``.safetensors``: the network's weights, and in its metadata the
:class:`~zhangcolor.model_record.ModelRecord` (what colorizing needs: the network's description,
bins, class weights, temperature, colour space) and the provenance (the training config, the
step, the version that wrote it), which loading never validates. Training keeps a second file
beside its checkpoints, ``last.state.pt``, with the optimizer, scheduler, RNG and progress
(:func:`save_training_state`); the two together resume a run exactly.

Files written by zhangcolor 0.1.0 (format ``zhangcolor-checkpoint-1``, the whole training config
in the metadata) are read too. :mod:`zhangcolor.model_file` reads every kind of model file
(this one, ONNX exports and the authors' releases) through one entry point.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from zhangcolor import __version__
from zhangcolor.config import config_dict
from zhangcolor.files import as_text, atomic_write
from zhangcolor.model_record import (
    ModelRecord,
    ModelRecordError,
    make_record,
    provenance_from_json,
    record_from_json,
    record_from_legacy,
)
from zhangcolor.models import ModelConfig, build_model, unwrap
from zhangcolor.options import TrainConfig

#: The metadata "format" of the model files this version writes.
FORMAT = "zhangcolor-model"
#: The format of zhangcolor 0.1.0's checkpoints, still read.
LEGACY_FORMAT = "zhangcolor-checkpoint-1"


def write_model(
    path: str | Path, state: dict[str, Tensor], record: ModelRecord, provenance: dict
) -> None:
    """Weights ``state`` with their record and provenance, as .safetensors, atomically and
    durably. The file is made in memory and written by Python, so a full disk is an OSError
    naming ``path`` (safetensors' own writer raises its SafetensorError)."""
    metadata = {
        "format": FORMAT,
        "model": record.to_json(),
        "provenance": json.dumps(provenance),
    }
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    data = safetensors_bytes(state, metadata=metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=True)


def save_model(
    path: str | Path, model: nn.Module, config: TrainConfig, bins: dict[str, Tensor], step: int
) -> None:
    """A training checkpoint: the model's weights, its record (network and ``bins``), and the
    training ``config`` and ``step`` as provenance. The training photos are named by what they
    are (:func:`describe_photos`), not by a path that means something only on the machine that
    trained."""
    training, photos = training_provenance(config)
    provenance = {
        "step": step,
        "zhangcolor_version": __version__,
        "training": training,
        "photos": photos,
    }
    record = make_record(config.model, bins)
    write_model(path, unwrap(model).state_dict(), record, provenance)


def training_provenance(config: TrainConfig) -> tuple[dict, dict | None]:
    """How a checkpoint records the ``config`` it was trained with: its options as plain data,
    the data folder by its name, and the photos as :func:`describe_photos` names them (None
    without a data folder)."""
    training = config_dict(config)
    photos = None
    if config.data is not None:
        photos = describe_photos(Path(config.data))
        training["data"] = photos["folder"]
    return training, photos


@functools.lru_cache(maxsize=4)
def describe_photos(folder: Path) -> dict:
    """The training photos as provenance: the folder's name, how many images it holds and the
    SHA-256 of their sorted relative paths (one per line), which tells whether two models saw
    the same photo list. Listed once per process and folder."""
    from zhangcolor.images import find_images

    names = sorted(p.relative_to(folder).as_posix() for p in find_images(folder))
    listing = "\n".join(names).encode("utf-8", "surrogateescape")  # a name's bytes, UTF-8 or not
    digest = hashlib.sha256(listing).hexdigest()
    return {"folder": as_text(folder.resolve().name), "images": len(names), "paths_sha256": digest}


def read_metadata(path: str | Path) -> dict[str, str]:
    """A .safetensors file's metadata; ValueError when the file is not a readable one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable .safetensors file ({e})") from None


def read_checkpoint(path: str | Path) -> tuple[ModelRecord, dict]:
    """The record and provenance of a zhangcolor .safetensors file, from its header alone.

    Raises:
        ValueError: not a readable .safetensors file, not a zhangcolor one, or a damaged or
            newer record (the message names the file and what is wrong).
    """
    metadata = read_metadata(path)
    kind = metadata.get("format")
    try:
        if kind == FORMAT:
            return (
                record_from_json(metadata.get("model")),
                provenance_from_json(metadata.get("provenance")),
            )
        if kind == LEGACY_FORMAT:
            return record_from_legacy(metadata), _legacy_provenance(metadata)
    except ModelRecordError as e:
        raise ValueError(f"{path}: {e}") from None
    raise ValueError(f"{path} is not a zhangcolor model (no zhangcolor metadata)")


def _legacy_provenance(metadata: dict[str, str]) -> dict:
    """What a 0.1.0 checkpoint said of its training, unvalidated."""
    provenance = {"format": LEGACY_FORMAT, "zhangcolor_version": metadata.get("zhangcolor_version")}
    if "step" in metadata:
        provenance["step"] = metadata["step"]
    provenance["training"] = provenance_from_json(metadata.get("config"))
    return provenance


def checkpoint_step(path: Path) -> int | None:
    """The step a weights file was saved at; None when it is missing or unreadable."""
    try:
        return int(read_checkpoint(path)[1].get("step", -1))
    except (ValueError, TypeError, OSError):
        return None


def load_weights(path: str | Path, network: ModelConfig) -> nn.Module:
    """The network ``network`` describes, with the weights of the .safetensors at ``path``,
    once their names and shapes are checked against it (:func:`check_architecture`)."""
    check_architecture(path, network)  # before the network takes any memory
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} holds unreadable weights ({e})") from None
    model = build_model(network)
    model.load_state_dict(state)
    return model


@torch.no_grad()
def copy_matching(model: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Copy the weights of ``state`` into ``model`` where names match: whole when the shapes
    agree, and into the leading input channels where ``model``'s weight takes more (a
    network given hint inputs keeps its L weights; the new channels keep their values, zero
    for the hint layers). Returns the names that took nothing from ``state``; ValueError when
    a shared name has a shape that fits neither way."""
    left = []
    for name, target in model.state_dict().items():
        source = state.get(name)
        if source is None:
            left.append(name)
            continue
        if source.shape == target.shape:
            target.copy_(source)
        elif _leading_channels(source, target):
            target[:, : source.shape[1]].copy_(source)
            target[:, source.shape[1] :].zero_()
        else:
            raise ValueError(
                f"{name} is {tuple(source.shape)} in the model to start from and "
                f"{tuple(target.shape)} in this network"
            )
    return left


def _leading_channels(source: Tensor, target: Tensor) -> bool:
    """Whether ``source`` is ``target`` with fewer input channels (dim 1)."""
    return (
        source.dim() == target.dim() >= 2
        and source.shape[0] == target.shape[0]
        and source.shape[2:] == target.shape[2:]
        and source.shape[1] < target.shape[1]
    )


def check_architecture(path: str | Path, network: ModelConfig) -> None:
    """Raise ValueError unless the network ``network`` describes has exactly the weights' names
    and shapes in the file's header. The network is built on the meta device, so a damaged
    record (an eccv16 of width 200 is 12 GB) allocates nothing."""
    with safe_open(str(path), framework="pt") as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    with torch.device("meta"):
        model = build_model(network)
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
    raise ValueError(
        f"{path}: its record describes a network ({describe_network(network)}) that its "
        f"weights do not fit: {'; '.join(problems)}"
    )


def describe_network(network: ModelConfig) -> str:
    """A network in a few words, e.g. ``unet, efficientnet-lite0, classification head``."""
    variant = f"width {network.width:g}" if network.backbone == "eccv16" else network.encoder
    return f"{network.backbone}, {variant}, {network.head.value} head"


def package_model(
    source: str | Path,
    target: str | Path,
    *,
    half: bool = False,
    temperature: float | None = None,
    point_strength: float | None = None,
    notes: dict | None = None,
) -> dict:
    """Copy a checkpoint for shipping, optionally with its float weights in fp16, a calibrated
    ``temperature`` in its record (colorize's default for it) and, for a guided classification
    model, its points' vote weighted by ``point_strength`` (:func:`scale_point_vote`), and write
    a provenance JSON beside it (``TARGET.json``). Returns the provenance."""
    source, target = Path(source), Path(target)
    if source.suffix == ".pth":
        raise ValueError(f"{source} is the authors' release: convert it with convert-weights first")
    if target.suffix != ".safetensors":
        raise ValueError(
            f"the packaged model must be a .safetensors file, got {target} (its provenance "
            "is written beside it, with the suffix .json)"
        )
    record, provenance = read_checkpoint(source)
    load_weights(source, record.network)  # refuse weights that do not fit the record
    if temperature is not None:
        try:
            record = record.with_temperature(temperature)
        except ModelRecordError as e:
            raise ValueError(str(e)) from None
    state = load_file(str(source))
    if point_strength is not None:
        state = scale_point_vote(state, point_strength)
        # The vote's scale so far, so that packaging a packaged model again says it compounds.
        point_strength *= float(provenance.get("point_strength", 1.0))
        provenance = {**provenance, "point_strength": point_strength}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    provenance = portable(provenance)
    write_model(target, state, record, provenance)
    summary = {
        "source": source.name,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "dtype": "float16" if half else "float32",
        "step": provenance.get("step"),
        "temperature": temperature,
        "point_strength": point_strength,
        "config": provenance.get("training"),
        "photos": provenance.get("photos"),
        "zhangcolor_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(notes or {}),
    }
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(target.with_suffix(".json"), lambda tmp: tmp.write_text(text), durable=True)
    return summary


#: The training options that name files: a shipped model keeps their names only.
_PATH_OPTIONS = ("out", "bins", "init_from")


def portable(provenance: dict) -> dict:
    """``provenance`` with the absolute paths its training options name (the run folder, the
    bins, the model it started from) cut to their names: such a path means something only on
    the machine that trained (the photos are named by :func:`describe_photos` already). A
    relative path (to where training ran, as a DVC stage's are) stays."""
    training = provenance.get("training")
    if not isinstance(training, dict):
        return provenance
    names = {
        k: Path(v).name
        for k in _PATH_OPTIONS
        if isinstance(v := training.get(k), str) and Path(v).is_absolute()
    }
    return {**provenance, "training": {**training, **names}}


#: The last layer of a guided classification network's vote confidence (models/hint_prior.py).
_VOTE_CONFIDENCE = ("hint_prior.confidence.2.weight", "hint_prior.confidence.2.bias")


def scale_point_vote(state: dict[str, Tensor], strength: float) -> dict[str, Tensor]:
    """``state`` with its points' vote confidence multiplied by ``strength`` > 0 (exactly: the
    confidence's last layer is linear, so its weight and bias are scaled).

    Training fits the confidence for the cross-entropy, which hedges; colorize's users want
    their points followed. A strength calibrated for PSNR with points on held-out photos is the
    vote's counterpart of the calibrated T. Without points the network is unchanged. A
    ValueError for a model without the vote, or a strength that is not a positive number."""
    if not (isinstance(strength, int | float) and math.isfinite(strength) and strength > 0):
        raise ValueError(f"the point strength must be a positive number, got {strength!r}")
    if not all(k in state for k in _VOTE_CONFIDENCE):
        raise ValueError(
            "only a guided classification model (model.hints: true) has a points' vote to weight"
        )
    return {k: v * strength if k in _VOTE_CONFIDENCE else v for k, v in state.items()}


# ----------------------------------------------------------------------------- training state


#: What every training state holds.
_STATE_KEYS = frozenset({"optimizer", "scheduler", "progress", "rng"})


def save_training_state(path: Path, state: dict) -> None:
    """The trainer's half of a checkpoint (optimizer, scheduler, RNG, progress), atomically.
    Serialised in memory and written by Python, so a full disk is an OSError naming ``path``
    (torch's own writer raises RuntimeError: [enforce fail ...])."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()), durable=True)


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
