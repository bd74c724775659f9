"""The authors' SIGGRAPH 2017 network ("Real-Time User-Guided Image Colorization with Learned Deep
Priors", Zhang et al.): L, the ab of the user's points and their mask in, a U-Net-like body out.

Layer for layer, and name for name, as ``SIGGRAPHGenerator`` of richzhang/colorization-pytorch
(``models/networks.py``), whose state_dict is the release ``siggraph17-df00044c.pth``, so that
file loads as it is. The authors' choices that are unusual, kept because the weights need them:

- the encoder halves the resolution by slicing, ``x[:, :, ::2, ::2]`` between model1 and model2,
  model2 and model3, model3 and model4: no strided convolution, no pooling;
- each decoder stage adds (not concatenates) a 3×3 convolution of the encoder's feature map at
  its resolution (``model3short8``, ``model2short9``, ``model1short10``) to the transposed
  convolution's output, and model8, model9 and model10 start with the ReLU of that sum;
- the last layer before the regression output is a LeakyReLU (slope 0.2), not a ReLU, and the
  regression output is ``tanh`` × 110;
- both outputs always exist: 529 classes at 1/4 resolution on conv8 (the full ab grid, in gamut
  or not; :func:`zhangcolor.bins.grid_bins`) and ab at full resolution on conv10.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zhangcolor.constants import AB_NORM, L_CENT, L_NORM, Q_GRID
from zhangcolor.options import Head


def _conv(c_in: int, c_out: int, *, dilation: int = 1) -> nn.Conv2d:
    """A 3×3 convolution with bias that keeps the size."""
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation)


def _block(c_in: int, c_out: int, n: int, *, dilation: int = 1) -> list[nn.Module]:
    """n conv+ReLU pairs, then BatchNorm."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [_conv(c_in if i == 0 else c_out, c_out, dilation=dilation), nn.ReLU(True)]
    return [*layers, nn.BatchNorm2d(c_out)]


def _up(c_in: int, c_out: int) -> nn.Sequential:
    """×2 by a 4×4 transposed convolution."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))


def _check_shapes(lightness: Tensor, hints: Tensor | None) -> None:
    """A ValueError naming the shape unless L is ``(B, 1, H, W)`` with H and W multiples of 8
    (so that the three halvings and doublings meet) and hints, if any, ``(B, 3, H, W)``."""
    shape = tuple(lightness.shape)
    if len(shape) != 4 or shape[1] != 1 or shape[2] % 8 or shape[3] % 8:
        raise ValueError(f"lightness must be (B, 1, H, W) with H and W multiples of 8, got {shape}")
    if hints is not None and tuple(hints.shape) != (shape[0], 3, *shape[2:]):
        expected = (shape[0], 3, *shape[2:])
        raise ValueError(f"hints must be (B, 3, H, W) = {expected}, got {tuple(hints.shape)}")


class SIGGRAPH17(nn.Module):
    """L ``(B, 1, H, W)`` in [0, 100] and hints ``(B, 3, H, W)`` -> 529 class logits
    ``(B, 529, H/4, W/4)`` or ab ``(B, 2, H, W)`` in ab units, as :attr:`kind` says.

    Hints are (a / 110, b / 110, mask): the mask is 1 where the user gave a colour and 0
    elsewhere, and a and b are 0 where the mask is 0; None is no point anywhere. H and W must
    be multiples of 8.
    """

    takes_hints = True

    def __init__(self, *, head: Head | str) -> None:
        super().__init__()
        self._kind = Head.parse(head)
        if self._kind not in (Head.CLASSIFICATION, Head.REGRESSION):
            raise ValueError(
                f"siggraph17 has the authors' two outputs, classification (529 ab classes) and "
                f"regression (ab); no {self._kind.value} head"
            )
        self.model1 = nn.Sequential(*_block(4, 64, 2))  # L, a, b, mask in
        self.model2 = nn.Sequential(*_block(64, 128, 2))
        self.model3 = nn.Sequential(*_block(128, 256, 3))
        self.model4 = nn.Sequential(*_block(256, 512, 3))
        self.model5 = nn.Sequential(*_block(512, 512, 3, dilation=2))
        self.model6 = nn.Sequential(*_block(512, 512, 3, dilation=2))
        self.model7 = nn.Sequential(*_block(512, 512, 3))
        self.model8up, self.model3short8 = _up(512, 256), nn.Sequential(_conv(256, 256))
        self.model8 = nn.Sequential(nn.ReLU(True), *_block(256, 256, 2))
        self.model9up, self.model2short9 = _up(256, 128), nn.Sequential(_conv(128, 128))
        self.model9 = nn.Sequential(nn.ReLU(True), *_block(128, 128, 1))
        self.model10up, self.model1short10 = _up(128, 128), nn.Sequential(_conv(64, 128))
        self.model10 = nn.Sequential(nn.ReLU(True), _conv(128, 128), nn.LeakyReLU(0.2))
        self.model_class = nn.Sequential(nn.Conv2d(256, Q_GRID, 1))
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, 1), nn.Tanh())

    @property
    def kind(self) -> Head:
        return self._kind

    @property
    def out_stride(self) -> int:
        """How many input pixels one output pixel spans per axis: 4 for the classes, 1 for ab."""
        return 4 if self._kind is Head.CLASSIFICATION else 1

    def forward(self, lightness: Tensor, hints: Tensor | None = None) -> Tensor:
        if not torch.jit.is_tracing():  # an ONNX trace would warn, and the graph has no checks
            _check_shapes(lightness, hints)
        if hints is None:  # automatic colorization: no point anywhere
            hints = torch.zeros_like(lightness).expand(-1, 3, -1, -1)
        x = torch.cat([(lightness - L_CENT) / L_NORM, hints.to(lightness.dtype)], 1)  # (B, 4, H, W)
        conv1_2 = self.model1(x)  # (B, 64, H, W)
        conv2_2 = self.model2(conv1_2[:, :, ::2, ::2])  # (B, 128, H/2, W/2)
        conv3_3 = self.model3(conv2_2[:, :, ::2, ::2])  # (B, 256, H/4, W/4)
        conv4_3 = self.model4(conv3_3[:, :, ::2, ::2])  # (B, 512, H/8, W/8)
        conv7_3 = self.model7(self.model6(self.model5(conv4_3)))  # (B, 512, H/8, W/8)
        conv8_up = self.model8up(conv7_3) + self.model3short8(conv3_3)  # (B, 256, H/4, W/4)
        conv8_3 = self.model8(conv8_up)
        if self._kind is Head.CLASSIFICATION:
            return self.model_class(conv8_3)  # (B, 529, H/4, W/4)
        conv9_up = self.model9up(conv8_3) + self.model2short9(conv2_2)  # (B, 128, H/2, W/2)
        conv9_3 = self.model9(conv9_up)
        conv10_up = self.model10up(conv9_3) + self.model1short10(conv1_2)  # (B, 128, H, W)
        return self.model_out(self.model10(conv10_up)) * AB_NORM  # (B, 2, H, W)
