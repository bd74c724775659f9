"""What a network predicts from its features at 1/4 resolution, and how that becomes ab.

- ``classification`` (the paper's): logits over the Q = 313 bins, decoded by the annealed mean at
  a temperature T (paper, section 2.3);
- ``regression`` (the paper's baseline): ab itself; T does not apply;
- ``rgb-regression`` (an RGB-space baseline): sRGB, whose ab is taken.
"""

from __future__ import annotations

from torch import Tensor, nn

from zhangcolor.constants import AB_NORM, Q
from zhangcolor.options import Head


class ClassificationHead(nn.Conv2d):
    """Features ``(B, C, h, w)`` -> logits ``(B, Q, h, w)``: a 1×1 convolution."""

    kind = Head.CLASSIFICATION

    def __init__(self, channels: int) -> None:
        super().__init__(channels, Q, 1)


class RegressionHead(nn.Conv2d):
    """Features ``(B, C, h, w)`` -> ab ``(B, 2, h, w)`` in ab units: a 1×1 convolution whose
    output is scaled by 110, so that the convolution itself works in about [-1, 1]."""

    kind = Head.REGRESSION

    def __init__(self, channels: int) -> None:
        super().__init__(channels, 2, 1)

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features) * AB_NORM


class RgbRegressionHead(nn.Conv2d):
    """Features ``(B, C, h, w)`` -> sRGB ``(B, 3, h, w)`` (about [0, 1]): the RGB-space
    baseline's 1×1 convolution."""

    kind = Head.RGB_REGRESSION

    def __init__(self, channels: int) -> None:
        super().__init__(channels, 3, 1)
        nn.init.constant_(self.bias, 0.5)  # start at mid-gray


def build_head(kind: Head, channels: int) -> nn.Conv2d:
    heads = {
        Head.CLASSIFICATION: ClassificationHead,
        Head.REGRESSION: RegressionHead,
        Head.RGB_REGRESSION: RgbRegressionHead,
    }
    return heads[kind](channels)
