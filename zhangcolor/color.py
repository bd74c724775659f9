"""sRGB <-> CIE Lab (D65, 2° observer) on torch tensors.

The formulas and constants are those of ``skimage.color.rgb2lab`` / ``lab2rgb``, so the two agree
to floating-point rounding; here they run batched, on any device, and are differentiable.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from zhangcolor.constants import D65_WHITE, XYZ_FROM_RGB

# sRGB companding thresholds and CIE Lab's linear-segment constants, as skimage writes them.
_SRGB_LINEAR_IN = 0.04045
_SRGB_LINEAR_OUT = 0.0031308
_LAB_EPSILON = 0.008856
_LAB_KAPPA = 7.787
_LAB_F_EPSILON = 0.2068966


def _check_image(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (*, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got {x.dtype}; "
            "convert 8-bit images with x.float() / 255"
        )


def _matrix(m: Tensor, x: Tensor) -> Tensor:
    """Apply a 3×3 matrix over the channel axis: (*, 3, H, W) -> (*, 3, H, W)."""
    # A batched matmul over flattened pixels is several times faster than einsum here.
    return (m.to(dtype=x.dtype, device=x.device) @ x.flatten(-2)).view_as(x)


# Two elementwise steps take a faster form than the plain one on CPUs: x ** e as
# exp2(e · log2 x) (about 1.4× faster than pow on 16×3×256² float32), and a piecewise curve's
# branch chosen by lerp with a 0/1 weight (about 5× faster than torch.where, and exact: lerp
# returns either end exactly). tests/test_color.py checks each against its plain form.


def _power(x: Tensor, exponent: float) -> Tensor:
    """x ** exponent for x > 0, as exp2(exponent · log2 x)."""
    return torch.exp2(exponent * torch.log2(x))


def _select(condition: Tensor, if_true: Tensor, if_false: Tensor) -> Tensor:
    """torch.where(condition, if_true, if_false) for a piecewise curve, as a lerp."""
    return torch.lerp(if_false, if_true, condition.to(if_true.dtype))


# XYZ -> (X/Xn, Y/Yn, Z/Zn) folded into the RGB -> XYZ matrix, and f(X), f(Y), f(Z) -> (L+16, a, b).
_T_FROM_LINEAR = torch.tensor(XYZ_FROM_RGB, dtype=torch.float64) / torch.tensor(
    D65_WHITE, dtype=torch.float64
).view(3, 1)
_LAB_FROM_F = torch.tensor(
    [[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]], dtype=torch.float64
)
# skimage inverts the float64 matrix; doing the same keeps float64 results within rounding.
_LINEAR_FROM_XYZ = torch.linalg.inv(torch.tensor(XYZ_FROM_RGB, dtype=torch.float64))


def _lab_f(t: Tensor) -> Tensor:
    """CIE's f of XYZ / white: a cube root above ε, a line below (clamped so neither branch
    makes NaN values or gradients)."""
    return _select(
        t > _LAB_EPSILON, t.clamp_min(_LAB_EPSILON).pow(1.0 / 3.0), _LAB_KAPPA * t + 16.0 / 116.0
    )


def _lab_f_inverse(lab: Tensor) -> Tensor:
    """XYZ / white ``(*, 3, H, W)`` of Lab: f⁻¹ of (fx, fy, fz), negative fz set to 0 as in
    skimage."""
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    f = torch.stack((a / 500.0 + fy, fy, (fy - b / 200.0).clamp_min(0.0)), dim=-3)
    return _select(f > _LAB_F_EPSILON, f * f * f, (f - 16.0 / 116.0) / _LAB_KAPPA)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """Convert sRGB to CIE Lab.

    Args:
        rgb: ``(*, 3, H, W)`` float tensor, sRGB in [0, 1].

    Returns:
        ``(*, 3, H, W)`` Lab: L in [0, 100], a and b in about [-128, 127].
    """
    _check_image(rgb, "rgb")
    # Clamp inside each branch so that neither makes NaN values or gradients.
    gamma = _power((rgb.clamp_min(_SRGB_LINEAR_IN) + 0.055) / 1.055, 2.4)
    linear = _select(rgb > _SRGB_LINEAR_IN, gamma, rgb / 12.92)
    t = _matrix(_T_FROM_LINEAR, linear)  # XYZ / white
    lab = _matrix(_LAB_FROM_F, _lab_f(t))
    return lab - torch.tensor((16.0, 0.0, 0.0), dtype=lab.dtype, device=lab.device).view(3, 1, 1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Convert CIE Lab to sRGB, clipped to the sRGB gamut.

    Args:
        lab: ``(*, 3, H, W)`` float tensor, L in [0, 100], a and b in about [-128, 127].

    Returns:
        ``(*, 3, H, W)`` sRGB in [0, 1]. Colors outside the gamut are clipped, and negative Z is
        set to 0 first, as skimage does.
    """
    _check_image(lab, "lab")
    white = torch.tensor(D65_WHITE, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    linear = _matrix(_LINEAR_FROM_XYZ, _lab_f_inverse(lab) * white)
    return _srgb_curve(linear).clamp(0.0, 1.0)


# --- 8-bit images --------------------------------------------------------------------------------
# Photos come in and go out as 8-bit sRGB, so the companding curve can be a table: 256 entries
# from sRGB8 to linear light, 2¹⁶ from linear light to sRGB8. The second is fine enough that its
# steps (< 0.05 of a level, the curve's slope being at most 12.92) change a rounded output level
# only at rounding boundaries.
_LINEAR_STEPS = 65535


def _srgb_curve(linear: Tensor) -> Tensor:
    gamma = 1.055 * _power(linear.clamp_min(_SRGB_LINEAR_OUT), 1.0 / 2.4) - 0.055
    return _select(linear > _SRGB_LINEAR_OUT, gamma, linear * 12.92)


def _luminance_table() -> Tensor:
    """(3 · 256,) float32: the Y contribution of each 8-bit value of R, then G, then B."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    gamma = _power((v.clamp_min(_SRGB_LINEAR_IN) + 0.055) / 1.055, 2.4)
    linear = _select(v > _SRGB_LINEAR_IN, gamma, v / 12.92)  # (256,)
    return (_T_FROM_LINEAR[1].view(3, 1) * linear).flatten().float()


def _encoding_table() -> Tensor:
    """(2¹⁶ + 1,) uint8: sRGB8 of linear light i / 2¹⁶-1, rounded to the nearest level."""
    linear = torch.arange(_LINEAR_STEPS + 1, dtype=torch.float64) / _LINEAR_STEPS
    return (_srgb_curve(linear) * 255.0).round().clamp(0, 255).to(torch.uint8)


_LUMINANCE = _luminance_table().view(3, 256)  # R, G and B's parts of Y
_ENCODING = _encoding_table()
# XYZ / white -> linear RGB -> index into _ENCODING, as one matrix.
_TABLE_FROM_T = _LINEAR_FROM_XYZ * torch.tensor(D65_WHITE, dtype=torch.float64) * _LINEAR_STEPS


@functools.lru_cache(maxsize=32)
def _constant(table: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """A module constant on ``device`` (and in ``dtype``), copied there once: on a GPU each copy
    from the CPU would also wait for all the work queued before it."""
    return table.to(device=device, dtype=dtype or table.dtype)


def _check_image8(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 3 or x.dtype != torch.uint8:
        raise ValueError(
            f"{name} must be uint8 of shape (*, 3, H, W), got {x.dtype} {tuple(x.shape)}"
        )


def srgb8_to_lightness(rgb: Tensor) -> Tensor:
    """CIE L of 8-bit sRGB: :func:`rgb_to_lab`'s L channel, computed from L alone.

    L depends only on the luminance Y, so the three channels reduce to table look-ups and a sum,
    about 10× less work than the full conversion (colorizing needs only the photo's L).

    Args:
        rgb: ``(*, 3, H, W)`` uint8 sRGB.

    Returns:
        ``(*, 1, H, W)`` float32 L in [0, 100].
    """
    _check_image8(rgb, "rgb")
    (r, g, b), tables = rgb.unbind(-3), _constant(_LUMINANCE, rgb.device)
    y = _look_up(tables[0], r) + _look_up(tables[1], g) + _look_up(tables[2], b)
    return 116.0 * _lab_f(y.unsqueeze(-3)) - 16.0


def lab_to_srgb8(lab: Tensor) -> Tensor:
    """Convert CIE Lab to 8-bit sRGB, for writing images.

    Equals ``round(255 · lab_to_rgb(lab))`` but for rare values at a rounding boundary, which
    may differ by one level; faster, the companding curve being a table and the constants
    folded into one matrix.

    Args:
        lab: ``(*, 3, H, W)`` float tensor, L in [0, 100], a and b in about [-128, 127].

    Returns:
        ``(*, 3, H, W)`` uint8 sRGB, clipped to the gamut.
    """
    _check_image(lab, "lab")
    matrix = _constant(_TABLE_FROM_T, lab.device, lab.dtype)
    steps = _matrix(matrix, _lab_f_inverse(lab))  # linear RGB in steps of the table
    index = steps.add_(0.5).clamp_(0, _LINEAR_STEPS)
    return _look_up(_constant(_ENCODING, lab.device), index)


def _look_up(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for a 1-D table and an index of any shape, integral or float (a float
    index is truncated towards zero, as ``.long()`` does). Through int32 and index_select:
    int64 indices (torch.take) allocate twice the memory, and that is what costs, not the
    look-ups (a 256² photo's L: 0.6 -> 0.3 ms)."""
    return table.index_select(0, index.to(torch.int32).flatten()).view(index.shape)
