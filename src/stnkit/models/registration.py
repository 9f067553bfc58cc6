"""``fieldnet``: learned registration, a (moving, fixed) pair to the field that aligns them.

:class:`FieldRegistration` reads the pair as one tensor ``(B, 2, *spatial)`` (moving, then fixed: the
samples of :mod:`stnkit.data.shapes`) and returns the displacement field ``(B, dims, *spatial)`` in the
convention of :mod:`stnkit.geometry.fields` (channels ``(x, y[, z])``, normalised, fixed point ``p`` reads
moving at ``p + u(p)``). Its parts:

* optionally an **affine transformer** first (``pre_affine=True``): a small strided-conv encoder of the
  pair, global average pooling and a linear head, initialised to the identity, giving the affine
  family's parameters ``A``;
* a :class:`~stnkit.nn.FieldNet` (U-Net, zero at initialisation) on (moving warped by ``A``, fixed),
  predicting a dense displacement ``d`` (``field="dense"``) or a stationary velocity field integrated by
  scaling and squaring (``field="velocity"``).

The whole map is ``p -> A(p + d(p))``, composed exactly (the affine map applied to the field's source
points, :meth:`~stnkit.geometry.TransformFamily.transform_points`), not by resampling the affine field.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int
from ..geometry import field_grid, get_transform, grid_to_field, integrate_velocity, warp_field
from ..nn import FieldNet

FIELDS = ("dense", "velocity")


class Registration(NamedTuple):
    """What :meth:`FieldRegistration.register` returns."""

    warped: Tensor  # moving warped by displacement, (B, C, *spatial)
    displacement: Tensor  # the whole map's field, (B, dims, *spatial)
    field: Tensor  # FieldNet's own output (dense displacement or velocity): what smoothness regularises
    affine: Tensor | None  # the affine family's parameters (B, 6 | 12), pre_affine only


def _affine_encoder(dims: int, in_channels: int, num_params: int, identity: Tensor) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    layers: list[nn.Module] = []
    c = in_channels
    for width in (8, 16, 32, 32):
        layers += [conv(c, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = width
    head = nn.Linear(c, num_params)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(identity)
    return nn.Sequential(*layers, pool, nn.Flatten(), head)


class FieldRegistration(nn.Module):
    """A registration network: (moving, fixed) -> displacement field (module docstring).

    Args:
        dims: 2 (images) or 3 (volumes).
        field: ``velocity`` (default; diffeomorphic up to discretisation) or ``dense``.
        pre_affine: an affine transformer before the FieldNet.
        features: the FieldNet's encoder widths (default: ``(16, 32, 32, 32)``, VoxelMorph's).
        steps: scaling-and-squaring steps of a velocity field.
        in_channels: channels of moving plus fixed.

    Example:
        >>> net = FieldRegistration(dims=2, features=(4, 8), pre_affine=True)
        >>> x = torch.rand(2, 2, 16, 16)
        >>> u = net(x)
        >>> u.shape, float(u.abs().max())  # the identity at initialisation
        (torch.Size([2, 2, 16, 16]), 0.0)
    """

    def __init__(
        self,
        dims: int = 3,
        field: str = "velocity",
        pre_affine: bool = False,
        features: tuple[int, ...] = (16, 32, 32, 32),
        steps: int = 7,
        in_channels: int = 2,
    ):
        super().__init__()
        self.dims = check_int("dims", dims, low=2, high=3)
        self.field = check_choice("field", field, FIELDS)
        if not isinstance(pre_affine, bool):
            raise TypeError(f"pre_affine must be a bool, got {type(pre_affine).__name__}")
        in_channels = check_int("in_channels", in_channels, low=2)
        if in_channels % 2:
            raise ValueError(f"in_channels must be even (moving and fixed alike), got {in_channels}")
        self.fieldnet = FieldNet(dims, in_channels, features, out=field, steps=steps)
        self.family = get_transform("affine", dims=dims)
        self.affine = (
            _affine_encoder(dims, in_channels, self.family.num_params, self.family.identity(1)[0])
            if pre_affine
            else None
        )

    @property
    def divisor(self) -> int:
        """Every input size must be divisible by this (the FieldNet's)."""
        return self.fieldnet.divisor

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(moving, fixed)`` of a pair tensor ``(B, 2C, *spatial)``."""
        if x.ndim != self.dims + 2 or x.shape[1] != self.fieldnet.in_channels:
            layout = "(B, 2, H, W)" if self.dims == 2 else "(B, 2, D, H, W)"
            raise ValueError(f"x must be a (moving, fixed) pair {layout}, got shape {tuple(x.shape)}")
        c = x.shape[1] // 2
        return x[:, :c], x[:, c:]

    def register(self, moving: Tensor, fixed: Tensor) -> Registration:
        """Register ``moving`` to ``fixed`` (``(B, C, *spatial)`` each): :class:`Registration`."""
        params = None
        source = moving
        if self.affine is not None:
            params = self.affine(torch.cat([moving, fixed], 1))
            grid = self.family.grid(params, tuple(moving.shape[2:]))
            source = warp_field(moving, grid_to_field(grid))
        raw = self.fieldnet(source, fixed)
        d = raw if self.field == "dense" else integrate_velocity(raw, self.fieldnet.steps)
        if params is None:
            u = d
        else:
            points = field_grid(d).reshape(d.shape[0], -1, self.dims)
            u = grid_to_field(self.family.transform_points(params, points).view(*field_grid(d).shape))
        return Registration(warp_field(moving, u), u, raw, params)

    def forward(self, x: Tensor) -> Tensor:
        """The displacement field ``(B, dims, *spatial)`` of the pairs ``x`` ``(B, 2, *spatial)``."""
        return self.register(*self.split(x)).displacement

    def extra_repr(self) -> str:
        return f"dims={self.dims}, field={self.field!r}, pre_affine={self.affine is not None}"


__all__ = ["FIELDS", "FieldRegistration", "Registration"]
