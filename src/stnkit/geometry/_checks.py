"""Input validation shared by the geometry functions.

Every check raises ``TypeError`` (wrong kind of object or dtype) or
``ValueError`` (wrong shape or value) with a message that names the argument,
what was expected and what was got, so that bad input never reaches torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def is_tracing() -> bool:
    """True while exporting or compiling, where data-dependent checks cannot run."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if hasattr(torch, "compiler") and torch.compiler.is_compiling():
        return True
    return bool(torch.onnx.is_in_onnx_export())


def check_float_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
    return x


def check_finite(name: str, x: Tensor) -> None:
    if is_tracing():
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")


def check_image(name: str, x: object) -> Tensor:
    """An image batch of shape (B, C, H, W) with B, C, H, W > 0."""
    x = check_float_tensor(name, x)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} must be non-empty in every dimension (B, C, H, W), got shape {tuple(x.shape)}")
    return x


def check_size(name: str, size: object) -> tuple[int, int]:
    """An output size: an int (square) or a pair (H, W) of positive ints."""
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {size!r}")
    if isinstance(size, int):
        size = (size, size)
    if isinstance(size, torch.Size):
        # under torch.jit.trace (and the TorchScript ONNX exporter) the entries are 0-dim tensors
        size = tuple(int(s) for s in size)
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {size!r}")
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])


def check_points(name: str, points: object) -> Tensor:
    points = check_float_tensor(name, points)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, N, 2) with x before y, got shape {tuple(points.shape)}")
    if points.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch, got shape {tuple(points.shape)}")
    return points


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]
