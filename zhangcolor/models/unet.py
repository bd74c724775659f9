"""A U-Net: an ImageNet-style encoder, and a decoder with skip connections back up to 1/4 of the
input resolution (the output stride of the paper's network, so every head and loss is shared).

Encoders: torchvision's resnet18 / resnet34, or EfficientNet-Lite0, Lite1 or Lite2. L is repeated
to 3 channels and normalised as the encoders' ImageNet training expects.

With ``hints``, a user's colour points (a / 110, b / 110, mask) enter twice, each through a
small convolutional branch (:class:`HintBranch`) added to the features: after the encoder's stem,
and to the decoder's output at 1/4. Both branches start at zero, so a hint U-Net starts out as
the automatic one, whose weights it can be initialised from; the encoder's ImageNet input stays
RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zhangcolor.constants import L_MAX
from zhangcolor.models.eccv16 import HINT_CHANNELS
from zhangcolor.models.efficientnet_lite import VARIANTS, EfficientNetLite
from zhangcolor.options import ENCODERS

#: Input normalisation (mean, std) each encoder's ImageNet weights were trained with; the Lite
#: models take [-1, 1].
_NORMALISATION = {
    "resnet18": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "resnet34": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "efficientnet-lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet-lite1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet-lite2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class ResNetEncoder(nn.Module):
    """torchvision ResNet -> features at strides 4, 8, 16 and 32."""

    def __init__(self, name: str) -> None:
        super().__init__()
        # Imported here: torchvision takes about 1.5 s to load, and only the ResNets need it.
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.channels = (64, 128, 256, 512)
        self.name = name
        self.stem_stride, self.stem_channels = 4, 64

    def forward(self, x: Tensor, stem_extra: Tensor | None = None) -> list[Tensor]:
        """``stem_extra`` ``(B, 64, H/4, W/4)`` is added to the stem's output."""
        x = self.stem(x)
        if stem_extra is not None:
            x = x + stem_extra
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features

    def load_imagenet(self, source: bool | str) -> None:
        """Load ImageNet weights from a file, or from torchvision's cache (True or "torchvision").

        Never downloads: a missing file is an error that says where to put it.
        """
        if source is True or source == "torchvision":
            import torchvision

            weights = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights"}[self.name]
            url = getattr(torchvision.models, weights).IMAGENET1K_V1.url
            path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
            if not path.is_file():
                raise FileNotFoundError(
                    f"no cached ImageNet weights for {self.name} at {path}; copy the file there "
                    "from a machine with internet, pass a file path as `pretrained`, "
                    "or use pretrained: false"
                )
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, _ = nn.Module.load_state_dict(self._as_resnet(), state, strict=False)
        if missing:
            raise ValueError(f"{path} is not a {self.name} state_dict (missing {missing[:3]} ...)")

    def _as_resnet(self) -> nn.Module:
        # A view of the parts under torchvision's names, so its state_dict loads as is.
        view = nn.Module()
        view.conv1, view.bn1 = self.stem[0], self.stem[1]
        for i, layer in enumerate(self.layers):
            setattr(view, f"layer{i + 1}", layer)
        return view


class Up(nn.Module):
    """Upsample ×2, concatenate the skip, then two 3×3 conv-BN-ReLU."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c_in + c_skip, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


assert set(_NORMALISATION) == set(ENCODERS), "every encoder needs its normalisation"


class HintBranch(nn.Module):
    """Hint channels ``(B, 3, H, W)`` -> features ``(B, C, H/s, W/s)`` to add at stride s.

    The points are first spread over the photo by normalised convolution (Knutsson & Westin,
    1993), at several scales: for cells of s to 64s pixels, the mean ab of the hinted pixels in
    each cell (upsampled bilinearly to stride s) and whether a point is near.
    A one-pixel point so reaches the branch undiluted, and a region far from every point still
    knows its nearest points' colours, at the coarser scales; the network learns where to follow
    which (along edges, within objects). Two 3×3 convolutions without biases follow, so that no
    points add nothing, whatever the branch has learnt; the last starts at zero,
    and its output is scaled by :attr:`GAIN`, so that Adam, whose steps have the size of the
    learning rate whatever the gradient, grows the branch from zero at the pace the rest of the
    network trains at (as the regression head's ab is scaled by 110).
    """

    GAIN = 10.0
    #: Cell sizes, in multiples of the branch's stride: 64 is a quarter of the photo or more,
    #: so that every pixel hears of the photo's points.
    SCALES = (1, 2, 4, 8, 16, 64)

    def __init__(self, channels: int, stride: int, hidden: int = 32) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Sequential(
            nn.Conv2d(HINT_CHANNELS * len(self.SCALES), hidden, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(hidden, channels, 3, padding=1, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, hints: Tensor) -> Tensor:
        size = (hints.shape[-2] // self.stride, hints.shape[-1] // self.stride)
        spread = [self._spread(hints, self.stride * scale, size) for scale in self.SCALES]
        return self.out(self.conv(torch.cat(spread, 1))) * self.GAIN

    @staticmethod
    def _spread(hints: Tensor, cell: int, size: tuple[int, int]) -> Tensor:
        """``(B, 3, *size)``: the mean hinted ab of ``cell``-pixel cells and whether any pixel
        is hinted there, upsampled bilinearly to ``size``."""
        pooled = F.avg_pool2d(hints, cell, ceil_mode=True) if cell > 1 else hints  # (B, 3, ., .)
        if tuple(pooled.shape[-2:]) != size:
            pooled = F.interpolate(pooled, size=size, mode="bilinear", align_corners=False)
        ab, covered = pooled[:, :2], pooled[:, 2:]  # ab sums and hinted share, per pixel
        mean = ab / covered.clamp_min(1e-6)  # the hinted pixels' mean ab
        return torch.cat([mean * (covered > 0), (covered > 0).to(hints.dtype)], 1)


class UNet(nn.Module):
    """L ``(B, 1, H, W)`` in [0, 100] (and, with ``hints``, hint channels ``(B, 3, H, W)``) ->
    features ``(B, 64, H/4, W/4)``."""

    def __init__(
        self,
        *,
        encoder: str = "efficientnet-lite0",
        pretrained: str | bool = False,
        hints: bool = False,
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; valid: {', '.join(ENCODERS)}")
        self.encoder = (
            EfficientNetLite(variant=encoder) if encoder in VARIANTS else ResNetEncoder(encoder)
        )
        if pretrained:
            # True: each encoder's offline default (torchvision's cache, or the Lite package).
            self.encoder.load_imagenet(True if pretrained is True else str(pretrained))
        c4, c8, c16, c32 = self.encoder.channels
        self.up16 = Up(c32, c16, 256)
        self.up8 = Up(256, c8, 128)
        self.up4 = Up(128, c4, 64)
        self.out_channels = 64
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in _NORMALISATION[encoder])
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.takes_hints = hints
        if hints:
            stem = self.encoder.stem_stride
            self.hint_stem = HintBranch(self.encoder.stem_channels, stem)
            self.hint_out = HintBranch(self.out_channels, 4)

    def forward(self, lightness: Tensor, hints: Tensor | None = None) -> Tensor:
        gray = (lightness / L_MAX).expand(-1, 3, -1, -1)  # (B, 3, H, W) in [0, 1]
        if hints is not None and not self.takes_hints:
            raise ValueError("this network takes no hints")
        if hints is None:  # the hint branches are bias-free: no points add exactly nothing
            f4, f8, f16, f32 = self.encoder((gray - self.mean) / self.std)
            return self.up4(self.up8(self.up16(f32, f16), f8), f4)
        hints = hints.to(lightness)
        extra = self.hint_stem(hints)  # (B, C_stem, H/s, W/s) at the stem's stride
        f4, f8, f16, f32 = self.encoder((gray - self.mean) / self.std, extra)
        features = self.up4(self.up8(self.up16(f32, f16), f8), f4)  # (B, 64, H/4, W/4)
        return features + self.hint_out(hints)
