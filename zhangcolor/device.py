"""Where and at which precision the networks run: the device, and bf16 autocast where the
hardware runs bf16 natively (recent GPUs; CPUs with AMX or AVX-512-BF16). Elsewhere bf16 is
emulated and many times slower than fp32, so ``auto`` keeps fp32 there."""

from __future__ import annotations

import torch

from zhangcolor.options import DEVICES, PRECISIONS


def resolve_device(device: str) -> torch.device:
    """``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu`` or ``cuda``."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU; use cpu or auto")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 where asked for or (auto) where the hardware runs it natively;
    None for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def precision_context(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` (from :func:`resolve_precision`) on ``device``; a no-op for None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AMX or AVX-512-BF16)."""
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False
