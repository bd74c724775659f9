"""A trained model's identity: what colorizing with it needs, apart from how it was trained.

A model file (a ``.safetensors`` checkpoint, an ``.onnx`` export) carries two things beside its
weights, as nanoGPT keeps ``model_args`` apart from the run's ``config``:

- the **model record**, versioned: the network's description (backbone, head, width, encoder),
  the bin centres and class-rebalancing weights it was trained with, its temperature and its
  colour space. Loading reads this, checks every value (the file may come from anyone), and
  rebuilds the network from it alone;
- the **provenance**: the training config, the step, the version that wrote it. Loading never
  validates it, so renaming or removing a training option never makes a model unloadable.

Version 1 is the layout of zhangcolor 0.1.0, whose checkpoints stored the whole training config
and took the network from its ``model`` section; :func:`record_from_legacy` reads those. A record
of a version newer than :data:`RECORD_VERSION` is refused with a message naming both versions.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zhangcolor.constants import MIN_TEMPERATURE, Q_GRID, TEMPERATURE, Q
from zhangcolor.options import Head, ModelConfig

#: The version of the record this zhangcolor writes, and the newest it reads.
RECORD_VERSION = 2
#: The most ab units a bin centre may lie from gray: the ab plane of sRGB colours lies within
#: about ±128, the paper's bins within ±110.
MAX_CENTER = 200.0
#: The most bins a model may have (the paper's 313; the full grid of 10 has 529).
MAX_BINS = 4096
#: The largest class-rebalancing weight accepted (the paper's are below 100).
MAX_WEIGHT = 1e6
#: Network fields that describe how a network was initialised for training, not the network.
_TRAINING_ONLY = ("pretrained",)


class ModelRecordError(ValueError):
    """A model's record is missing, damaged, or from a newer zhangcolor; the message says which."""


@dataclass(frozen=True)
class ModelRecord:
    """What colorizing with a model needs besides its weights.

    Attributes:
        network: the network's description; its ``pretrained`` is always False (the weights
            come from the file).
        centers: ``(Q, 2)`` float32 bin centres, in the order of the classification logits.
        weights: ``(Q,)`` float32 class-rebalancing weights w it was trained with (ones when
            unknown).
        temperature: the annealed-mean T to decode it at unless told otherwise: its calibrated
            one, else the paper's 0.38.
        color_space: ``lab`` (the network predicts ab) or ``rgb`` (the RGB regression baseline,
            whose ab is taken from its sRGB).
    """

    network: ModelConfig
    centers: Tensor = field(repr=False)
    weights: Tensor = field(repr=False)
    temperature: float = TEMPERATURE
    color_space: str = "lab"

    def __post_init__(self) -> None:
        expected = "rgb" if self.network.head is Head.RGB_REGRESSION else "lab"
        if self.color_space != expected:
            raise ModelRecordError(
                f"a {self.network.head.value} head predicts in {expected}, not in "
                f"{_short(self.color_space)}"
            )
        classes = classes_of(self.network)
        if classes is not None and len(self.centers) != classes:
            raise ModelRecordError(
                f"its {self.network.backbone} classification head has {classes} classes, and "
                f"its record {len(self.centers)} bin centres; decoding needs one per class"
            )

    @property
    def head(self) -> Head:
        return self.network.head

    def with_temperature(self, temperature: float) -> ModelRecord:
        """The same record with another T (checked)."""
        return dataclasses.replace(self, temperature=_temperature(temperature))

    def to_json(self) -> str:
        """The record as the JSON text a model file stores."""
        network = {
            k: getattr(v, "value", v)
            for k, v in dataclasses.asdict(self.network).items()
            if k not in _TRAINING_ONLY
        }
        return json.dumps(
            {
                "version": RECORD_VERSION,
                "network": network,
                "color_space": self.color_space,
                "temperature": self.temperature,
                "centers": self.centers.tolist(),
                "weights": self.weights.tolist(),
            }
        )


def classes_of(network: ModelConfig) -> int | None:
    """The classes of a network's classification head (313; the authors' siggraph17: the 529
    nodes of the ab grid), each needing a bin centre; None for a regression head."""
    if network.head is not Head.CLASSIFICATION:
        return None
    return Q_GRID if network.backbone == "siggraph17" else Q


def make_record(
    network: ModelConfig, bins: dict[str, Tensor], temperature: float = TEMPERATURE
) -> ModelRecord:
    """The record of a network trained with ``bins`` (``centers`` and ``weights``)."""
    network = dataclasses.replace(network, pretrained=False)
    return ModelRecord(
        network=network,
        centers=_centers(bins["centers"].tolist()),
        weights=_weights(bins["weights"].tolist(), len(bins["centers"])),
        temperature=_temperature(temperature),
        color_space="rgb" if network.head is Head.RGB_REGRESSION else "lab",
    )


def record_from_json(text: str) -> ModelRecord:
    """A record from the JSON of :meth:`ModelRecord.to_json`, every value checked.

    Raises:
        ModelRecordError: not JSON, a newer version, or a value out of range (named).
    """
    values = _mapping(_json(text, "model record"), "the model record")
    version = values.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelRecordError(f"the model record has no valid version ({version!r})")
    if version > RECORD_VERSION:
        raise ModelRecordError(
            f"the model record is version {version}, written by a newer zhangcolor; this one "
            f"reads versions 1 to {RECORD_VERSION}: upgrade zhangcolor (pip install -U zhangcolor)"
        )
    unknown = sorted(set(values) - {"version", "network", "color_space", "temperature", "centers",
                                     "weights"})  # fmt: skip
    if unknown:
        raise ModelRecordError(f"the model record has unknown fields: {', '.join(unknown)}")
    centers = _centers(_required(values, "centers"))
    return ModelRecord(
        network=_network(_required(values, "network"), strict=True),
        centers=centers,
        weights=_weights(_required(values, "weights"), len(centers)),
        temperature=_temperature(values.get("temperature", TEMPERATURE)),
        color_space=values.get("color_space", "lab"),
    )


def record_from_legacy(metadata: dict[str, str]) -> ModelRecord:
    """The record of a zhangcolor 0.1.0 checkpoint (format ``zhangcolor-checkpoint-1``): the
    network from its training config's ``model`` section (fields this version does not know are
    left out; the rest of that config is provenance), the bins from ``centers`` and
    ``weights``, T from ``temperature``."""
    config = _mapping(_json(_required(metadata, "config"), "training config"), "the config")
    centers = _centers(_json(_required(metadata, "centers"), "centers"))
    network = _network(_required(config, "model"), strict=False)
    return ModelRecord(
        network=network,
        centers=centers,
        weights=_weights(_json(_required(metadata, "weights"), "weights"), len(centers)),
        temperature=_temperature(metadata.get("temperature", TEMPERATURE)),
        color_space="rgb" if network.head is Head.RGB_REGRESSION else "lab",
    )


def record_for_head(
    head: Head | str, centers: Any, temperature: Any = TEMPERATURE, weights: Any = None
) -> ModelRecord:
    """A record that knows only the head of its network, for files whose network is run from
    their own graph (an ONNX export of zhangcolor 0.1.0): the rest of ``network`` is the
    defaults, and no network is ever built from it."""
    network = ModelConfig(head=Head.parse(head))
    centers_t = _centers(centers)
    return ModelRecord(
        network=network,
        centers=centers_t,
        weights=_weights([1.0] * len(centers_t) if weights is None else weights, len(centers_t)),
        temperature=_temperature(temperature),
        color_space="rgb" if network.head is Head.RGB_REGRESSION else "lab",
    )


def provenance_from_json(text: str | None) -> dict:
    """The provenance a file stores, as far as it is readable: never an error, since loading
    does not depend on it."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return value if isinstance(value, dict) else {"unreadable": repr(value)[:200]}


# ----------------------------------------------------------------------------- checks


def _json(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        raise ModelRecordError(f"its {what} is not text")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ModelRecordError(f"its {what} is not valid JSON ({e})") from None


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ModelRecordError(f"{what} is a {type(value).__name__}, not a mapping")
    return value


def _required(values: dict, key: str) -> Any:
    if key not in values:
        raise ModelRecordError(f"no {key!r} in the model's metadata")
    return values[key]


def _network(values: Any, *, strict: bool) -> ModelConfig:
    """The network's description; ``strict`` refuses fields this version does not know."""
    values = _mapping(values, "the network description")
    known = {f.name for f in dataclasses.fields(ModelConfig)} - set(_TRAINING_ONLY)
    unknown = sorted(set(values) - known - set(_TRAINING_ONLY))
    if unknown and strict:
        raise ModelRecordError(f"the network description has unknown fields: {', '.join(unknown)}")
    kept = {k: v for k, v in values.items() if k in known}
    try:
        return ModelConfig(**kept, pretrained=False)
    except (ValueError, TypeError) as e:
        raise ModelRecordError(f"the network description is invalid ({e})") from None


def _finite_numbers(values: Any, what: str) -> list[float]:
    if not isinstance(values, list):
        raise ModelRecordError(f"the {what} are a {type(values).__name__}, not a list")
    numbers = []
    for i, v in enumerate(values):
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise ModelRecordError(f"the {what} hold {_short(v)} at {i}, not a finite number")
        numbers.append(float(v))
    return numbers


def _centers(values: Any) -> Tensor:
    """``(Q, 2)`` float32 from a list of Q pairs of finite numbers within ±:data:`MAX_CENTER`."""
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_BINS:
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise ModelRecordError(f"the bin centres must be 1 to {MAX_BINS} pairs, got {size}")
    flat = []
    for i, pair in enumerate(values):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ModelRecordError(f"bin centre {i} is {_short(pair)}, not an (a, b) pair")
        flat += _finite_numbers(pair, "bin centres")
    centers = torch.tensor(flat, dtype=torch.float64).view(-1, 2)
    if centers.abs().max() > MAX_CENTER:
        raise ModelRecordError(
            f"the bin centres reach {centers.abs().max():.3g} ab units; real ones lie within "
            f"±{MAX_CENTER:g}"
        )
    return centers.float()


def _weights(values: Any, count: int) -> Tensor:
    """``(Q,)`` float32 from Q finite numbers in (0, :data:`MAX_WEIGHT`]."""
    numbers = _finite_numbers(values, "class weights")
    if len(numbers) != count:
        raise ModelRecordError(f"{len(numbers)} class weights for {count} bin centres")
    if any(not 0 < w <= MAX_WEIGHT for w in numbers):
        raise ModelRecordError(f"the class weights must lie in (0, {MAX_WEIGHT:g}]")
    return torch.tensor(numbers, dtype=torch.float32)


def _temperature(value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ModelRecordError(f"its temperature {_short(value)} is not a number") from None
    if not (math.isfinite(t) and MIN_TEMPERATURE <= t <= 1.0):
        raise ModelRecordError(
            f"its temperature {_short(value)} is outside [{MIN_TEMPERATURE:g}, 1]"
        )
    return t


def _short(value: Any, limit: int = 40) -> str:
    """A value in a message, never longer than ``limit`` characters."""
    text = repr(value) if not isinstance(value, list | dict) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
