"""Input validation shared by every layer of stnkit (geometry, nn, data, models, training).

Every check raises ``TypeError`` (wrong kind of object or dtype) or
``ValueError`` (wrong shape or value) with a message that names the argument,
what was expected and what was got, so that bad input never reaches torch.
"""

from __future__ import annotations

import math
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


# the floating dtypes stnkit computes in (float16 and bfloat16 geometry runs in float32: see stnkit.geometry.warp)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {x.dtype}")
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


def check_image_or_volume(name: str, x: object) -> Tensor:
    """An image batch (B, C, H, W) or a volume batch (B, C, D, H, W), every size > 0."""
    x = check_float_tensor(name, x)
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must have shape (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    if any(s == 0 for s in x.shape):
        layout = "(B, C, H, W)" if x.ndim == 4 else "(B, C, D, H, W)"
        raise ValueError(f"{name} must be non-empty in every dimension {layout}, got shape {tuple(x.shape)}")
    return x


def check_size_3d(name: str, size: object) -> tuple[int, int, int]:
    """A 3-D output size: an int (cube) or a triple (D, H, W) of positive ints."""
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a triple (D, H, W) of ints, got {size!r}")
    if isinstance(size, int):
        size = (size, size, size)
    if isinstance(size, torch.Size):  # under tracing the entries are 0-dim tensors
        size = tuple(int(s) for s in size)
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"{name} must be an int or a triple (D, H, W) of ints, got {size!r}")
    if min(size) <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1]), int(size[2])


def check_points_3d(name: str, points: object) -> Tensor:
    points = check_float_tensor(name, points)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (B, N, 3) with x, y, z in that order, got shape {tuple(points.shape)}"
        )
    if points.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch, got shape {tuple(points.shape)}")
    return points


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


def check_int(name: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """An ``int`` (not a ``bool``) in ``[low, high]``; ``TypeError`` for another type, ``ValueError`` out of range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        if high is not None:
            expected = f"an int in [{low}, {high}]"
        else:
            expected = "a positive int" if low == 1 else f"an int >= {low}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (not a ``bool``) in ``[low, high]``, returned as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    return value


def check_range(name: str, value: object, *, low: float, high: float | None = None, symmetric: bool = False):
    """A ``(lo, hi)`` pair within ``[low, high]``; a single number ``a`` means ``(-a, a)`` when ``symmetric``."""
    if symmetric and isinstance(value, (int, float)) and not isinstance(value, bool):
        a = check_number(name, value, low=0.0, high=high)
        return (-a, a)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        kind = "a number or a (low, high) pair" if symmetric else "a (low, high) pair"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    bound = -high if symmetric and high is not None else low
    lo = check_number(f"{name}[0]", value[0], low=bound, high=high)
    hi = check_number(f"{name}[1]", value[1], low=bound, high=high)
    if lo > hi:
        raise ValueError(f"{name} must have low <= high, got {tuple(value)}")
    return (lo, hi)


def check_input(x: object, shape: tuple[int, int, int]) -> Tensor:
    """``x`` as a ``(B, *shape)`` batch, or a ValueError naming the shape expected."""
    x = check_image("x", x)
    if tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"x must have shape (B, {shape[0]}, {shape[1]}, {shape[2]}) for this model, got shape {tuple(x.shape)}"
        )
    return x
