"""The paper's network (Fig. 2): conv1-conv8, BatchNorm after each block, dilation 2 in conv5
and conv6, and a deconvolution back up to 1/4 of the input resolution.

Layer for layer as the authors' release (``colorizers/eccv16.py``), without the final 313-way
1×1 convolution, which is the classification head here, so that any head fits the same body.

With ``hints``, conv1 also takes a user's colour points, as the SIGGRAPH 2017 network does: the
hinted ab / 110 and a mask (1 where hinted) beside the normalised L; no hints are zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zhangcolor.constants import L_CENT, L_NORM

#: Input channels of a user's colour points: a / 110, b / 110, mask.
HINT_CHANNELS = 3


def _convs(c_in: int, c_out: int, n: int, *, stride_last: int = 1, dilation: int = 1) -> list:
    """n 3×3 conv+ReLU layers; the last one may stride."""
    layers: list[nn.Module] = []
    for i in range(n):
        stride = stride_last if i == n - 1 else 1
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride, dilation, dilation),
            nn.ReLU(inplace=True),
        ]
    return layers


def _block(c_in: int, c_out: int, n: int, *, stride_last: int = 1, dilation: int = 1):
    """One of conv1-conv7: n conv+ReLU layers, then BatchNorm."""
    convs = _convs(c_in, c_out, n, stride_last=stride_last, dilation=dilation)
    return nn.Sequential(*convs, nn.BatchNorm2d(c_out))


def _width(channels: int, width: float) -> int:
    return max(8, round(channels * width))


class ECCV16(nn.Module):
    """L ``(B, 1, H, W)`` in [0, 100] (and, with ``hints``, hint channels ``(B, 3, H, W)``) ->
    features ``(B, 256·width, H/4, W/4)``.

    At width 1 the body and the classification head hold 32.2 M parameters, as in the paper.
    """

    def __init__(self, *, width: float = 1.0, hints: bool = False) -> None:
        super().__init__()
        c64, c128, c256, c512 = (_width(c, width) for c in (64, 128, 256, 512))
        self.takes_hints = hints
        c_in = 1 + (HINT_CHANNELS if hints else 0)
        self.body = nn.Sequential(
            _block(c_in, c64, 2, stride_last=2),  # conv1, /2
            _block(c64, c128, 2, stride_last=2),  # conv2, /4
            _block(c128, c256, 3, stride_last=2),  # conv3, /8
            _block(c256, c512, 3),  # conv4
            _block(c512, c512, 3, dilation=2),  # conv5, dilated
            _block(c512, c512, 3, dilation=2),  # conv6, dilated
            _block(c512, c512, 3),  # conv7
            nn.Sequential(  # conv8: a deconvolution back up to /4, then two convs
                nn.ConvTranspose2d(c512, c256, 4, 2, 1),
                nn.ReLU(inplace=True),
                *_convs(c256, c256, 2),
            ),
        )
        self.out_channels = c256

    def forward(self, lightness: Tensor, hints: Tensor | None = None) -> Tensor:
        x = (lightness - L_CENT) / L_NORM  # (B, 1, H, W) in [-0.5, 0.5]
        if self.takes_hints:
            if hints is None:
                hints = x.new_zeros(x.shape[0], HINT_CHANNELS, *x.shape[-2:])
            x = torch.cat([x, hints.to(x)], 1)  # (B, 4, H, W)
        elif hints is not None:
            raise ValueError("this network takes no hints")
        return self.body(x)
