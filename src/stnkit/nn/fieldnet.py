"""A small U-Net that predicts a dense displacement (or velocity) field from a (moving, fixed) pair.

The field follows :mod:`stnkit.geometry.fields`: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``,
channel ``k`` the displacement along ``(x, y[, z])``, normalised frame, mapping output
points to input points (``warp_field(moving, field)`` reads ``moving`` at ``p + u(p)``).

References:
    G. Balakrishnan, A. Zhao, M. R. Sabuncu, J. Guttag, A. V. Dalca, "VoxelMorph: A
    Learning Framework for Deformable Medical Image Registration", IEEE TMI 38(8), 2019
    (the architecture: 3x3x3 convolutions and LeakyReLU(0.2), strided convolutions down,
    upsampling and skip concatenation up). A. V. Dalca et al., MICCAI 2018 (velocity
    fields integrated by scaling and squaring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_image_or_volume, check_int
from ..geometry.fields import integrate_velocity, warp_field

OUTPUTS = ("dense", "velocity")
LEAKY_SLOPE = 0.2


def _block(conv: type[nn.Module], c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(c_in, c_out, kernel_size=3, stride=stride, padding=1), nn.LeakyReLU(LEAKY_SLOPE))


class FieldNet(nn.Module):
    """A U-Net from a (moving, fixed) pair to a dense field, zero (the identity warp) at initialisation.

    Architecture (after VoxelMorph's description), with ``features = (f_0, ..., f_n)``
    and every convolution ``3x3`` (``3x3x3``), padding 1, followed by LeakyReLU(0.2):

    * encoder: ``cat(moving, fixed)`` -> conv (``f_0``, stride 1), then ``n`` convs
      of stride 2 (``f_1``, ..., ``f_n``), each halving the size;
    * decoder: ``n`` times: nearest upsampling by 2, concatenation with the encoder
      output of that size, conv (``f_{i}`` at level ``i``);
    * head: a conv (no activation) to ``dims`` channels, its weights and bias zero,
      so the field is exactly zero at initialisation.

    The default 3-D net (``in_channels=2``, ``features=(16, 32, 32, 32)``) has
    **202,803** parameters. Because the head starts at zero, the first backward pass
    reaches only the head; once it has moved (one optimiser step), gradients reach
    every layer.

    Args:
        dims: 2 (``Conv2d``, images ``(B, C, H, W)``) or 3 (``Conv3d``, volumes ``(B, C, D, H, W)``).
        in_channels: the channels of ``moving`` plus those of ``fixed``.
        features: the encoder widths, ``f_0`` at full resolution; the input sizes must
            be divisible by ``2 ** (len(features) - 1)``.
        out: ``dense``: :meth:`forward` returns the displacement field; ``velocity``:
            it returns a stationary velocity field, which :meth:`displacement`
            integrates (:func:`~stnkit.geometry.integrate_velocity`, ``steps`` squarings).
        steps: scaling-and-squaring steps for ``out="velocity"``, ``>= 0``.
        align_corners: the frame of the field and of the warp.

    Example:
        >>> net = FieldNet(dims=2, in_channels=2, features=(4, 8))
        >>> moving, fixed = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
        >>> warped, field = net.warp(moving, fixed)
        >>> field.shape, bool(field.abs().max() == 0), torch.allclose(warped, moving, atol=1e-6)
        (torch.Size([1, 2, 16, 16]), True, True)
        >>> sum(p.numel() for p in FieldNet().parameters())  # the default 3-D net
        202803
    """

    def __init__(
        self,
        dims: int = 3,
        in_channels: int = 2,
        features: tuple[int, ...] = (16, 32, 32, 32),
        out: str = "dense",
        steps: int = 7,
        align_corners: bool = False,
    ):
        super().__init__()
        self.dims = check_int("dims", dims, low=2, high=3)
        self.in_channels = check_int("in_channels", in_channels)
        if isinstance(features, (str, bytes)) or not hasattr(features, "__len__") or len(features) == 0:
            raise TypeError(f"features must be a non-empty tuple of positive ints, got {features!r}")
        self.features = tuple(check_int(f"features[{i}]", f) for i, f in enumerate(features))
        self.out = check_choice("out", out, OUTPUTS)
        self.steps = check_int("steps", steps, low=0)
        self.align_corners = bool(align_corners)
        conv = nn.Conv2d if self.dims == 2 else nn.Conv3d
        f = self.features
        self.encoder = nn.ModuleList(
            [_block(conv, self.in_channels, f[0])] + [_block(conv, f[i - 1], f[i], stride=2) for i in range(1, len(f))]
        )
        decoder = []
        c = f[-1]
        for i in range(len(f) - 2, -1, -1):  # level i: upsample, concatenate the encoder's f[i] channels, conv
            decoder.append(_block(conv, c + f[i], f[i]))
            c = f[i]
        self.decoder = nn.ModuleList(decoder)
        self.head = conv(c, self.dims, kernel_size=3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def divisor(self) -> int:
        """The number every input size must be divisible by: ``2 ** (len(features) - 1)``.

        Example:
            >>> FieldNet().divisor
            8
        """
        return 2 ** (len(self.features) - 1)

    def _check_pair(self, moving: object, fixed: object) -> tuple[Tensor, Tensor]:
        moving = check_image_or_volume("moving", moving)
        fixed = check_image_or_volume("fixed", fixed)
        layout = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
        for name, x in (("moving", moving), ("fixed", fixed)):
            if x.ndim != self.dims + 2:
                raise ValueError(f"{name} must have shape {layout} for a {self.dims}-D FieldNet, got {tuple(x.shape)}")
        if moving.shape[0] != fixed.shape[0] or moving.shape[2:] != fixed.shape[2:]:
            raise ValueError(
                "moving and fixed must have the same batch and spatial size, "
                f"got {tuple(moving.shape)} and {tuple(fixed.shape)}"
            )
        if moving.shape[1] + fixed.shape[1] != self.in_channels:
            raise ValueError(
                f"moving and fixed must have in_channels={self.in_channels} channels together, "
                f"got {moving.shape[1]} + {fixed.shape[1]}"
            )
        spatial = tuple(int(s) for s in moving.shape[2:])
        if any(s % self.divisor for s in spatial):
            raise ValueError(
                f"input sizes must be divisible by {self.divisor} (2 ** (len(features) - 1)), got {spatial}"
            )
        return moving, fixed

    def forward(self, moving: Tensor, fixed: Tensor) -> Tensor:
        """The field of the pair: displacement (``out="dense"``) or velocity (``out="velocity"``).

        Args:
            moving: ``(B, C_m, H, W)`` (``(B, C_m, D, H, W)`` in 3-D).
            fixed: ``(B, C_f, *spatial)``, ``C_m + C_f = in_channels``, the same size.

        Returns:
            ``(B, dims, *spatial)`` in the convention of :mod:`stnkit.geometry.fields`.

        Example:
            >>> FieldNet(dims=2, features=(4, 8))(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)).shape
            torch.Size([2, 2, 8, 8])
        """
        moving, fixed = self._check_pair(moving, fixed)
        x = torch.cat([moving, fixed], dim=1)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)

    def displacement(self, moving: Tensor, fixed: Tensor) -> Tensor:
        """The displacement field: :meth:`forward`, integrated when ``out="velocity"``.

        Example:
            >>> net = FieldNet(dims=2, features=(4, 8), out="velocity", steps=4)
            >>> net.displacement(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)).abs().max()
            tensor(0., grad_fn=<MaxBackward1>)
        """
        field = self(moving, fixed)
        if self.out == "velocity":
            field = integrate_velocity(field, self.steps, self.align_corners)
        return field

    def warp(self, moving: Tensor, fixed: Tensor) -> tuple[Tensor, Tensor]:
        """``(warped, field)``: ``moving`` warped by :meth:`displacement` (``warp_field``, bilinear).

        Example:
            >>> net = FieldNet(dims=3, features=(4, 8))
            >>> moving = torch.rand(1, 1, 8, 8, 8)
            >>> warped, field = net.warp(moving, torch.rand(1, 1, 8, 8, 8))
            >>> field.shape, torch.allclose(warped, moving, atol=1e-6)
            (torch.Size([1, 3, 8, 8, 8]), True)
        """
        field = self.displacement(moving, fixed)
        return warp_field(moving, field, align_corners=self.align_corners), field

    def extra_repr(self) -> str:
        return f"dims={self.dims}, features={self.features}, out={self.out!r}, steps={self.steps}"


__all__ = ["FieldNet"]
