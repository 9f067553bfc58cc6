"""``shapes3d`` and ``shapes2d``: synthetic registration pairs of labelled smooth shapes, with ground truth.

Each pair is a **moving** and a **fixed** image (``(1, D, H, W)`` or ``(1, H, W)``) of the same scene, the
fixed one seen through a known smooth transform, with the label maps of both and the true field:

* **Scene**: a body (label 1: semi-axes in ``[0.6, 0.75]``, normalised frame) holding
  ``num_labels - 1`` blobs (centres in ``[-0.35, 0.35]``, semi-axes in ``[0.15, 0.3]``), each an
  ellipsoid of random orientation whose boundary is bent by a smooth random function (four random
  Fourier terms); a later blob covers an earlier one, background (0) lies outside the body. The scene is a function of continuous points, so the fixed image
  is the scene evaluated at the true source points, not a resampled image.
* **Intensities**: one per label (uniform in ``[0.2, 1]``, background 0, the same in both images),
  a Gaussian blur of 0.6 voxel (partial volume), a smooth multiplicative bias field
  ``exp(bias * F(p))`` drawn independently for each image, and Gaussian noise of std ``noise``.
* **Transform**: a stationary velocity field ``v`` (eight random Fourier terms per component, scaled to
  a largest vector norm of ``max_velocity``, normalised units) integrated by
  :func:`~stnkit.geometry.integrate_velocity` (7 squarings), then a random affine map (the affine
  family's :meth:`~stnkit.geometry.TransformFamily.random` at ``affine_strength``): fixed point ``p``
  shows the scene at ``T(p) = A(p + u_v(p))``. The ground truth ``field`` is ``T(p) - p`` in the
  convention of :mod:`stnkit.geometry.fields` (channels ``(x, y[, z])``, normalised,
  ``align_corners=False``, output (fixed) to input (moving)), so
  ``warp_field(moving, field) ~ fixed`` and the moving labels warped by ``field`` are the fixed labels
  up to interpolation.

Pairs are drawn on the fly, one generator per pair seeded by ``(seed, epoch, index)``
(:func:`~stnkit.data.dataset.stream_seed`): fixed sets (``fresh=False``) give the same pairs on every
machine and every call (and keep them in memory once drawn), training sets (``fresh=True``) are drawn
afresh each epoch (:meth:`ShapesPairs.set_epoch`). Memory: a 64^3 pair is about 5.5 MB (two float32
volumes, two uint8 label maps, the float32 field).

>>> ds = ShapesPairs(dims=2, n=3, size=32, seed=0)
>>> x, y = ds[0]
>>> x.shape, y["field"].shape, y["fixed_labels"].dtype
(torch.Size([2, 32, 32]), torch.Size([2, 32, 32]), torch.int64)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, check_number
from ..geometry import base_grid, base_grid_3d, field_grid, get_transform, grid_to_field, integrate_velocity
from .dataset import check_fresh, stream_seed

# the side of the square (2-D) or cube (3-D) of each dataset, by default
DEFAULT_SIZE = {2: 128, 3: 64}
MAX_SIZE = {2: 1024, 3: 256}
BLUR_SIGMA = 0.6  # voxels
VELOCITY_STEPS = 7


class _Fourier:
    """A smooth random function ``R^dims -> R^channels``: ``sum_j a_j cos(pi w_j . p + phi_j)``.

    ``w_j ~ N(0, scale^2)`` per coordinate, ``phi_j ~ U(0, 2 pi)``, ``a_j ~ N(0, 1 / terms)``.
    """

    def __init__(self, g: torch.Generator, dims: int, terms: int, scale: float, channels: int = 1):
        self.omega = torch.randn(terms, dims, generator=g) * scale
        self.phase = torch.rand(terms, generator=g) * 2 * math.pi
        self.amp = torch.randn(channels, terms, generator=g) / math.sqrt(terms)

    def __call__(self, points: Tensor) -> Tensor:
        """``points`` ``(N, dims)`` -> ``(channels, N)``."""
        return self.amp @ torch.cos(math.pi * points @ self.omega.T + self.phase).T


def _rotation(g: torch.Generator, dims: int) -> Tensor:
    """A random rotation ``(dims, dims)`` (QR of a Gaussian matrix, determinant +1)."""
    q, r = torch.linalg.qr(torch.randn(dims, dims, generator=g))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


class _Scene:
    """A body (label 1) holding ``num_labels - 1`` smaller blobs, as functions of continuous points.

    Every shape is a bent ellipsoid; a later shape covers an earlier one where they overlap.
    """

    def __init__(self, g: torch.Generator, dims: int, num_labels: int):
        self.shapes = []
        for k in range(num_labels):
            if k == 0:  # the body
                centre = (torch.rand(dims, generator=g) * 2 - 1) * 0.05
                radii = 0.6 + torch.rand(dims, generator=g) * 0.15
            else:
                centre = (torch.rand(dims, generator=g) * 2 - 1) * 0.35
                radii = 0.15 + torch.rand(dims, generator=g) * 0.15
            self.shapes.append((centre, radii, _rotation(g, dims), _Fourier(g, dims, 4, 2.0)))
        self.intensity = torch.cat([torch.zeros(1), 0.2 + 0.8 * torch.rand(num_labels, generator=g)])

    def labels(self, points: Tensor) -> Tensor:
        """Label (0 = background) at each point ``(N, dims)``: ``(N,)`` int64."""
        out = torch.zeros(points.shape[0], dtype=torch.int64)
        for k, (c, r, rot, bend) in enumerate(self.shapes):
            level = 1 - (((points - c) @ rot) / r).square().sum(1) + 0.3 * bend(points)[0]
            out[level > 0] = k + 1
        return out


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``x`` ``(1, 1, *spatial)`` (``sigma`` in voxels, reflect padding)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    dims = x.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = k.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        x = conv(F.pad(x, pad, mode="reflect"), k.view(shape))
    return x


class ShapesPairs(Dataset):
    """Registration pairs of synthetic labelled shapes (module docstring), drawn deterministically by seed.

    Args:
        dims: 2 (``shapes2d``, images ``(1, H, W)``) or 3 (``shapes3d``, volumes ``(1, D, H, W)``).
        n: the number of pairs.
        size: the side of the square or cube (default 128 in 2-D, 64 in 3-D).
        seed: the seed of the draws (an int >= 0).
        fresh: ``False`` (validation and test): one fixed draw. ``True`` (training): :meth:`set_epoch`
            draws new pairs from ``(seed, epoch)``.
        num_labels: foreground labels per scene (the body and ``num_labels - 1`` blobs inside it).
        max_velocity: the largest norm of the velocity field (normalised units; 0.15 is about 5 voxels
            of 64).
        affine_strength: the scale of the random affine map (0: none).
        noise: the std of the Gaussian noise on each image.
        bias: the strength of the multiplicative bias field (0: none).

    ``ds[i]`` is ``(x, y)``: ``x`` ``(2, *spatial)`` float32, the moving image then the fixed one (what a
    registration network reads); ``y`` a dict of ``moving_labels`` and ``fixed_labels`` (int64
    ``spatial``) and ``field`` (float32 ``(dims, *spatial)``, the true field). :meth:`pair` gives one pair
    with its parts named, the velocity field and the affine parameters too.
    """

    def __init__(
        self,
        dims: int = 3,
        n: int = 32,
        *,
        size: int | None = None,
        seed: int = 0,
        fresh: bool = False,
        num_labels: int = 4,
        max_velocity: float = 0.15,
        affine_strength: float = 0.35,
        noise: float = 0.02,
        bias: float = 0.2,
    ):
        self.dims = check_int("dims", dims, low=2, high=3)
        self.n = check_int("n", n)
        self.size = DEFAULT_SIZE[self.dims] if size is None else check_int("size", size, low=8, high=MAX_SIZE[dims])
        self.fresh = check_fresh(fresh)
        stream_seed(seed, None)  # validates seed
        self.seed = seed
        self.num_labels = check_int("num_labels", num_labels, high=32)
        self.max_velocity = check_number("max_velocity", max_velocity, low=0.0, high=1.0)
        self.affine_strength = check_number("affine_strength", affine_strength, low=0.0, high=2.0)
        self.noise = check_number("noise", noise, low=0.0)
        self.bias = check_number("bias", bias, low=0.0, high=2.0)
        self.epoch: int | None = 0 if fresh else None
        self._cache: dict[int, dict] = {}

    @property
    def name(self) -> str:
        return f"shapes{self.dims}d"

    @property
    def spatial(self) -> tuple[int, ...]:
        return (self.size,) * self.dims

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"ShapesPairs(dims={self.dims}, n={self.n}, size={self.size}, seed={self.seed}, fresh={self.fresh}, "
            f"epoch={self.epoch})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of ``epoch`` (``fresh=True``); a no-op for fixed sets."""
        stream_seed(self.seed, epoch)  # validates epoch
        if self.fresh:
            self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([stream_seed(self.seed, self.epoch), index]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))

    def _points(self) -> Tensor:
        grid = base_grid(self.spatial) if self.dims == 2 else base_grid_3d(self.spatial)
        return grid.reshape(1, *self.spatial, self.dims)

    def _image(self, scene: _Scene, labels: Tensor, g: torch.Generator, grid_points: Tensor) -> Tensor:
        image = scene.intensity[labels].view(1, 1, *self.spatial)
        image = _blur(image, BLUR_SIGMA)
        bias = _Fourier(g, self.dims, 4, 1.0)(grid_points).view(1, 1, *self.spatial)
        image = image * torch.exp(self.bias * bias)
        return image + self.noise * torch.randn(image.shape, generator=g)

    def pair(self, index: int) -> dict:
        """Pair ``index`` of the current draw: ``moving``, ``fixed`` (``(1, *spatial)``), ``moving_labels``,
        ``fixed_labels`` (``spatial``, int64), ``field`` (the true field, ``(dims, *spatial)``),
        ``velocity`` (the velocity field before the affine map) and ``affine`` (the affine family's
        parameters)."""
        index = check_int("index", index, low=0, high=self.n - 1)
        if not self.fresh and index in self._cache:
            return self._cache[index]
        g = self._generator(index)
        d = self.dims
        scene = _Scene(g, d, self.num_labels)
        points = self._points()  # (1, *spatial, d)
        flat = points.reshape(-1, d)
        # the transform: velocity, then the affine map on its source points
        vel_fn = _Fourier(g, d, 8, 1.0, channels=d)
        v = vel_fn(flat).view(1, d, *self.spatial)  # channels x, y[, z]
        largest = v.square().sum(1).sqrt().amax()
        v = v * (self.max_velocity / largest.clamp_min(1e-12))
        u_v = integrate_velocity(v, VELOCITY_STEPS)
        family = get_transform("affine", dims=d)
        affine = family.random(1, self.affine_strength, generator=g)
        source = family.transform_points(affine, field_grid(u_v).reshape(1, -1, d))
        field = grid_to_field(source.view(1, *self.spatial, d))
        # the scene, seen on the grid (moving) and at the source points (fixed)
        moving_labels = scene.labels(flat).view(self.spatial)
        fixed_labels = scene.labels(source.view(-1, d)).view(self.spatial)
        moving = self._image(scene, moving_labels, g, flat)
        fixed = self._image(scene, fixed_labels, g, flat)
        out = {
            "moving": moving[0].float(),
            "fixed": fixed[0].float(),
            "moving_labels": moving_labels.to(torch.uint8),
            "fixed_labels": fixed_labels.to(torch.uint8),
            "field": field[0].float(),
            "velocity": v[0].float(),
            "affine": affine[0].float(),
        }
        if not self.fresh:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if index < 0:
            index += self.n
        p = self.pair(int(index))
        x = torch.cat([p["moving"], p["fixed"]])
        y = {
            "moving_labels": p["moving_labels"].long(),
            "fixed_labels": p["fixed_labels"].long(),
            "field": p["field"],
        }
        return x, y


__all__ = ["DEFAULT_SIZE", "ShapesPairs"]
