"""Dense displacement and velocity fields in 2-D and 3-D.

The convention (every function here uses it; it extends :mod:`stnkit.geometry.coords`):

* A **displacement field** ``u`` has shape ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.
  Channel ``k`` is the displacement along the grid's ``k``-th coordinate
  ``(x, y[, z])``, i.e. along ``(W, H[, D])``: **x first**, the reverse of the
  tensor's axis order. Displacements are in the **normalised** frame of
  ``F.affine_grid``: ``[-1, 1]`` across the grid, ``align_corners`` as given
  (default ``False``: -1 and +1 are the outer edges of the border voxels).
* The field maps **output to input**: output point ``p`` reads the input at
  ``p + u(p)``. The sampling grid is the identity grid
  (:func:`~stnkit.geometry.base_grid`, :func:`~stnkit.geometry.base_grid_3d`)
  plus ``u`` moved to the last axis; :func:`warp_field` hands it to
  ``F.grid_sample``. The zero field is the identity.
* Composition: ``compose_fields(a, b)`` is the field of ``p -> q + a(q)`` with
  ``q = p + b(p)``: the map ``(id + a) o (id + b)``. In terms of sampling,
  ``warp_field(warp_field(x, a), b) == warp_field(x, compose_fields(a, b))``
  (up to interpolation error): **warp by ``a`` first, then by ``b``**, as
  :func:`~stnkit.geometry.compose_grid` orders its stages.

VoxelMorph and MONAI store fields differently: in **voxels**, channels in the
tensor's axis order ``(d, h, w)`` (``(h, w)`` in 2-D), the source point of voxel
``i`` being ``i + flow(i)`` (voxel centres at integer indices). Both then
normalise with ``2 v / (n - 1) - 1`` and call ``grid_sample(align_corners=True)``,
which samples voxel coordinate ``v`` whatever the frame; so a field in voxels
means the same sampling in either of stnkit's frames, and only the scale of
:func:`field_to_pixels` depends on ``align_corners``. :func:`to_voxelmorph`,
:func:`from_voxelmorph`, :func:`to_monai` and :func:`from_monai` convert.

References:
    V. Arsigny, O. Commowick, X. Pennec, N. Ayache, "A Log-Euclidean Framework
    for Statistics on Diffeomorphisms", MICCAI 2006 (scaling and squaring).
    A. V. Dalca, G. Balakrishnan, J. Guttag, M. R. Sabuncu, "Unsupervised
    Learning for Fast Probabilistic Diffeomorphic Registration", MICCAI 2018
    (VoxelMorph's velocity fields). M. Chen et al., "A simple fixed-point
    approach to invert a deformation field", Medical Physics 35(1), 2008.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401 (doctests)
from torch import Tensor

from .._checks import check_choice, check_float_tensor, check_int, check_number
from .coords import base_grid, base_grid_3d, cached_operator
from .warp import MODES, PADDING_MODES, _grid_sample

ORDERS = ("xyz", "dhw")


def _check_field(name: str, u: object) -> Tensor:
    """A field ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, non-empty."""
    u = check_float_tensor(name, u)
    if u.ndim not in (4, 5) or u.shape[1] != u.ndim - 2:
        raise ValueError(f"{name} must have shape (B, 2, H, W) or (B, 3, D, H, W), got shape {tuple(u.shape)}")
    if any(s == 0 for s in u.shape):
        raise ValueError(f"{name} must be non-empty in every dimension, got shape {tuple(u.shape)}")
    return u


def _identity(spatial: tuple[int, ...], align_corners: bool, like: Tensor) -> Tensor:
    """The identity grid of ``spatial`` in ``like``'s device and dtype, built once per shape (read-only: never
    modify it in place); building a 128^3 one costs about as much as sampling a volume with it."""

    def make() -> Tensor:
        if len(spatial) == 2:
            return base_grid(spatial, align_corners, device=like.device, dtype=like.dtype)
        return base_grid_3d(spatial, align_corners, device=like.device, dtype=like.dtype)

    return cached_operator(("identity", spatial, bool(align_corners), str(like.device), like.dtype), make)


def field_grid(u: Tensor, align_corners: bool = False) -> Tensor:
    """The sampling grid of a displacement field: identity grid plus ``u``, channels last.

    ``u`` is ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, channel ``k`` the normalised
    displacement along ``(x, y[, z])`` (see the module docstring); the result,
    ``(B, H, W, 2)`` or ``(B, D, H, W, 3)``, holds the source point ``p + u(p)`` of
    every output point ``p``, ready for ``F.grid_sample`` or :func:`~stnkit.geometry.sample`.

    Example:
        >>> field_grid(torch.zeros(1, 2, 2, 2))[0, 0, 0]  # the centre of the top-left pixel
        tensor([-0.5000, -0.5000])
    """
    u = _check_field("u", u)
    spatial = tuple(int(s) for s in u.shape[2:])
    return _identity(spatial, align_corners, u) + u.movedim(1, -1)


def grid_to_field(grid: Tensor, align_corners: bool = False) -> Tensor:
    """The displacement field of a sampling grid: the inverse of :func:`field_grid`.

    Turns any grid (a family's ``grid``, ``F.affine_grid``, ``compose_grid``),
    ``(B, H, W, 2)`` or ``(B, D, H, W, 3)`` of normalised source points, into the
    field ``(B, 2, H, W)`` or ``(B, 3, D, H, W)`` of ``grid - identity``, channels
    ``(x, y[, z])`` as in the module docstring.

    Example:
        >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
        >>> u = grid_to_field(F.affine_grid(theta, [1, 1, 4, 4], align_corners=False))
        >>> u[0, :, 0, 0]  # a translation by 0.5 along x
        tensor([0.5000, 0.0000])
    """
    grid = check_float_tensor("grid", grid)
    if grid.ndim not in (4, 5) or grid.shape[-1] != grid.ndim - 2:
        raise ValueError(f"grid must have shape (B, H, W, 2) or (B, D, H, W, 3), got shape {tuple(grid.shape)}")
    spatial = tuple(int(s) for s in grid.shape[1:-1])
    return (grid - _identity(spatial, align_corners, grid)).movedim(-1, 1)


def warp_field(
    x: Tensor,
    u: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Warp an image or volume by a displacement field: output point ``p`` reads ``x`` at ``p + u(p)``.

    Convention (module docstring): ``u`` is ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``,
    channel ``k`` the displacement along ``(x, y[, z])`` = ``(W, H[, D])``, normalised
    as in ``F.affine_grid`` (``align_corners`` as given). The grid is the identity
    plus ``u``; ``F.grid_sample`` samples it (``bilinear`` is trilinear on volumes).

    Args:
        x: ``(B, C, H_in, W_in)`` for a 2-D field, ``(B, C, D_in, H_in, W_in)`` for a
            3-D one; its size may differ from the field's (the frame is normalised).
        u: the field; its spatial size is the output's.
        mode: ``bilinear``, ``nearest`` or ``bicubic`` (``bicubic`` in 2-D only).
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: the frame of ``u`` and of the sampling.

    Returns:
        ``(B, C, *u.shape[2:])`` in ``x``'s dtype.

    Example:
        >>> row = torch.arange(4.0).view(1, 1, 1, 4)
        >>> u = torch.zeros(1, 2, 1, 4)
        >>> u[:, 0] = 0.5  # read 1 px (2/4) to the right: the content moves left
        >>> warp_field(row, u, mode="nearest")
        tensor([[[[1., 2., 3., 0.]]]])
    """
    u = _check_field("u", u)
    x = check_float_tensor("x", x)
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    if x.ndim != u.ndim:
        want = "(B, C, H, W)" if u.ndim == 4 else "(B, C, D, H, W)"
        raise ValueError(f"x must have shape {want} for a {u.ndim - 2}-D field, got shape {tuple(x.shape)}")
    if x.shape[0] != u.shape[0]:
        raise ValueError(f"u must have the batch size of x ({x.shape[0]}), got {u.shape[0]}")
    if x.device != u.device:
        raise ValueError(f"u must be on the device of x ({x.device}), got {u.device}")
    if mode == "bicubic" and u.ndim == 5:
        raise ValueError("mode 'bicubic' is 2-D only; use 'bilinear' (trilinear) or 'nearest' for volumes")
    grid = field_grid(u, align_corners).to(x.dtype)
    return _grid_sample(x, grid, mode, padding_mode, align_corners)


def compose_fields(a: Tensor, b: Tensor, align_corners: bool = False, padding_mode: str = "border") -> Tensor:
    """The one field equal to warping by ``a`` first, then by ``b``.

    ``compose_fields(a, b)(p) = b(p) + a(p + b(p))``, ``a`` sampled bilinearly
    (trilinearly in 3-D): the map ``(id + a) o (id + b)``, since the output of the
    second warp reads the first warp's output at ``q = p + b(p)``, which reads the
    input at ``q + a(q)``. So, up to interpolation error,
    ``warp_field(warp_field(x, a), b) == warp_field(x, compose_fields(a, b))``.
    Fields follow the module convention (channels ``(x, y[, z])``, normalised).

    Args:
        a: the first warp's field, ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.
        b: the second warp's field, the same dimensionality and batch; the result
            lies on ``b``'s grid.
        align_corners: the frame of both fields.
        padding_mode: how ``a`` is read outside its grid: ``border`` (default:
            a constant field composes exactly everywhere), ``zeros`` (the identity
            outside, as VoxelMorph and MONAI compose) or ``reflection``.

    Returns:
        The field, ``b``'s shape.

    Example:
        >>> a = torch.full((1, 2, 4, 4), 0.25)
        >>> compose_fields(a, a)[0, :, 0, 0]
        tensor([0.5000, 0.5000])
    """
    a, b = _check_field("a", a), _check_field("b", b)
    if a.ndim != b.ndim or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must be fields of the same dimension and batch, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return b + warp_field(a, b, "bilinear", padding_mode, align_corners)


def integrate_velocity(v: Tensor, steps: int = 7, align_corners: bool = False, padding_mode: str = "border") -> Tensor:
    """The displacement field of the flow of a stationary velocity field, by scaling and squaring.

    ``u = v / 2**steps``, then ``steps`` times ``u = compose_fields(u, u)``: the
    time-1 flow ``exp(v)`` of ``dp/dt = v(p)``, with ``v`` and the result in the
    module convention (channels ``(x, y[, z])``, normalised). Each squaring doubles
    the time; the first-order start ``id + v / 2**steps`` makes the error fall as
    ``2**-steps`` for smooth ``v``. VoxelMorph's ``VecInt`` and MONAI's ``DVF2DDF``
    do the same in voxels, with ``padding_mode="zeros"``.

    Args:
        v: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.
        steps: squarings, ``>= 0`` (0 returns ``v``).
        align_corners: the frame of ``v``.
        padding_mode: as in :func:`compose_fields`.

    Returns:
        The displacement field, ``v``'s shape.

    Example:
        >>> v = torch.full((1, 2, 4, 4), 0.5)  # a constant velocity: a translation
        >>> torch.allclose(integrate_velocity(v), v)
        True
    """
    v = _check_field("v", v)
    steps = check_int("steps", steps, low=0)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    u = v / (2.0**steps)
    if steps == 0:
        return u
    # compose_fields(u, u) = u + warp_field(u, u), without re-checking u or rebuilding the identity each
    # squaring; the sum is taken in place in the sampler's output (its backward does not need it)
    ident = _identity(tuple(int(s) for s in u.shape[2:]), align_corners, u)
    for _ in range(steps):
        grid = ident + u.movedim(1, -1)
        u = _grid_sample(u, grid, "bilinear", padding_mode, align_corners).add_(u)
    return u


def _max_norm(u: Tensor) -> Tensor:
    """The largest Euclidean norm of the vectors of each field: ``(B,)``."""
    return u.square().sum(1).flatten(1).amax(1).sqrt()


def invert_field(
    u: Tensor,
    iterations: int = 50,
    tol: float = 1e-6,
    align_corners: bool = False,
    padding_mode: str = "border",
) -> tuple[Tensor, Tensor]:
    """The inverse displacement field, by fixed-point iteration ``w <- -u(p + w)``.

    Iterates from ``w = 0`` until ``(id + u) o (id + w) = id``, i.e. until the
    residual ``compose_fields(u, w) = w + u(p + w)`` vanishes: ``w`` undoes a warp
    by ``u`` applied after it, ``warp_field(warp_field(x, u), w) ~ x``. The
    iteration converges where ``u`` is a contraction (Lipschitz constant below 1,
    in the normalised frame); a smooth invertible field usually is. Fields are in
    the module convention (channels ``(x, y[, z])``, normalised).

    Args:
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.
        iterations: the most iterations, ``>= 0``.
        tol: stop once every batch item's residual is at most this (normalised units).
        align_corners: the frame of ``u``.
        padding_mode: how ``u`` is read outside its grid, as in :func:`compose_fields`.

    Returns:
        ``(w, residual)``: ``w`` of ``u``'s shape; ``residual``, ``(B,)``, the largest
        Euclidean norm over the grid of ``compose_fields(u, w)`` (the right
        composition: ``u`` after ``w`` as maps, warp by ``u`` then by ``w`` as
        sampling), normalised units. Where ``id + u`` has an inverse with Lipschitz
        constant ``L``, ``|w - true inverse| <= L * residual`` on the grid.

    Example:
        >>> u = torch.full((1, 2, 4, 4), 0.25)
        >>> w, res = invert_field(u)
        >>> w[0, :, 1, 1], res
        (tensor([-0.2500, -0.2500]), tensor([0.]))
    """
    u = _check_field("u", u)
    iterations = check_int("iterations", iterations, low=0)
    tol = check_number("tol", tol, low=0.0)
    w = torch.zeros_like(u)
    r = compose_fields(u, w, align_corners, padding_mode)
    for _ in range(iterations):
        if bool((_max_norm(r) <= tol).all()):
            break
        w = w - r  # = -u(p + w)
        r = compose_fields(u, w, align_corners, padding_mode)
    return w, _max_norm(r)


def field_to_pixels(u: Tensor, align_corners: bool = False, order: str = "xyz") -> Tensor:
    """Normalised displacements to displacements in voxels (pixels in 2-D).

    The voxel frame puts voxel centres at integer indices; a normalised displacement
    along an axis of ``n`` voxels is ``n / 2`` voxels per unit with
    ``align_corners=False`` (the edges are at -1, +1) and ``(n - 1) / 2`` with
    ``align_corners=True`` (the border centres are). ``u`` follows the module
    convention (channels ``(x, y[, z])``, normalised).

    Args:
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.
        align_corners: the frame of ``u``.
        order: ``xyz`` keeps channels ``(x, y[, z])``; ``dhw`` reverses them to the
            tensor's axis order ``([d,] h, w)``, as VoxelMorph and MONAI store fields.

    Returns:
        The field in voxels, ``u``'s shape.

    Raises:
        ValueError: ``align_corners=True`` with an axis of one voxel (no scale).

    Example:
        >>> u = torch.zeros(1, 2, 4, 8)
        >>> u[:, 0] = 0.5  # x: half a unit of 8 columns
        >>> field_to_pixels(u)[0, :, 0, 0], field_to_pixels(u, order="dhw")[0, :, 0, 0]
        (tensor([2., 0.]), tensor([0., 2.]))
    """
    u = _check_field("u", u)
    check_choice("order", order, ORDERS)
    out = u * _scale(u, align_corners)
    return out.flip(1) if order == "dhw" else out


def field_from_pixels(d: Tensor, align_corners: bool = False, order: str = "xyz") -> Tensor:
    """Displacements in voxels to normalised ones: the inverse of :func:`field_to_pixels`.

    Args:
        d: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)`` in voxels, channels ``(x, y[, z])``
            (``order="xyz"``) or ``([d,] h, w)`` (``order="dhw"``).
        align_corners: the normalised frame wanted.
        order: the channel order of ``d``.

    Returns:
        The field in the module convention (channels ``(x, y[, z])``, normalised), ``d``'s shape.

    Example:
        >>> d = torch.zeros(1, 2, 4, 8)
        >>> d[:, 1] = 2.0  # 2 columns, (h, w) order
        >>> field_from_pixels(d, order="dhw")[0, :, 0, 0]
        tensor([0.5000, 0.0000])
    """
    d = _check_field("d", d)
    check_choice("order", order, ORDERS)
    if order == "dhw":
        d = d.flip(1)
    return d / _scale(d, align_corners)


def _scale(u: Tensor, align_corners: bool) -> Tensor:
    """Voxels per normalised unit along ``(x, y[, z])``, shaped to broadcast over ``u``: ``(1, n, 1, ...)``."""
    sizes = [int(s) for s in reversed(u.shape[2:])]  # x, y[, z]
    if align_corners and min(sizes) < 2:
        raise ValueError(f"align_corners=True needs at least 2 voxels along every axis, got {tuple(u.shape[2:])}")
    per = [(n - 1) / 2.0 if align_corners else n / 2.0 for n in sizes]
    return torch.tensor(per, device=u.device, dtype=u.dtype).view(1, -1, *([1] * (u.ndim - 2)))


def to_voxelmorph(u: Tensor, align_corners: bool = False) -> Tensor:
    """A field in VoxelMorph's convention: voxels, channels ``([d,] h, w)``.

    VoxelMorph's ``SpatialTransformer`` reads voxel ``i`` of the moving image at
    ``i + flow(i)`` (voxel indices, channel ``j`` along tensor axis ``j``),
    normalising with ``(size - 1)`` for ``grid_sample(align_corners=True)`` and
    padding with zeros; ``warp_field(x, u, align_corners=align_corners)`` samples the
    same points. So this is ``field_to_pixels(u, align_corners, order="dhw")``;
    ``align_corners`` is the frame of ``u`` (stnkit's), not VoxelMorph's. VoxelMorph
    0.3.4's ``SpatialTransformer(align_corners=False)`` still normalises with
    ``(size - 1)`` and so reads voxel ``v size / (size - 1) - 1/2`` (even its zero
    field resamples): these converters match its default ``align_corners=True``.
    Checked against VoxelMorph 0.3.4's ``SpatialTransformer``, ``IntegrateVelocityField``
    and ``compose`` in ``tests/geometry/test_peers_medical.py`` (float64, to 1e-10).

    Args:
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, the module convention.
        align_corners: the frame of ``u``.

    Returns:
        ``flow``, ``u``'s shape.

    Example:
        >>> u = torch.zeros(1, 3, 2, 4, 8)
        >>> u[:, 2] = 1.0  # z: one unit = 1 slice of 2
        >>> to_voxelmorph(u)[0, :, 0, 0, 0]
        tensor([1., 0., 0.])
    """
    return field_to_pixels(u, align_corners, order="dhw")


def from_voxelmorph(flow: Tensor, align_corners: bool = False) -> Tensor:
    """A VoxelMorph ``flow`` (voxels, channels ``([d,] h, w)``) in stnkit's convention.

    The inverse of :func:`to_voxelmorph`: ``warp_field(x, from_voxelmorph(flow))``
    samples ``x`` where VoxelMorph's ``SpatialTransformer(size)(x, flow)`` does (its
    ``padding_mode`` is ``zeros``, :func:`warp_field`'s default).

    Args:
        flow: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)`` in voxels, channels in tensor axis order.
        align_corners: the frame of the result.

    Returns:
        ``u`` (channels ``(x, y[, z])``, normalised), ``flow``'s shape.

    Example:
        >>> flow = torch.zeros(1, 2, 4, 8)
        >>> flow[:, 0] = 1.0  # one row down
        >>> from_voxelmorph(flow)[0, :, 0, 0]
        tensor([0.0000, 0.5000])
    """
    return field_from_pixels(flow, align_corners, order="dhw")


def to_monai(u: Tensor, align_corners: bool = False) -> Tensor:
    """A field in MONAI's ``ddf`` convention: voxels, channels ``([d,] h, w)``.

    MONAI's ``monai.networks.blocks.Warp`` adds the ddf to a ``meshgrid`` of voxel
    indices (``ij`` indexing, channel ``j`` along tensor axis ``j``), normalises with
    ``(dim - 1)``, reverses the channels to x-first and calls
    ``grid_sample(align_corners=True)``: the same convention as VoxelMorph's, so
    this equals :func:`to_voxelmorph`. Mind the padding: ``Warp`` defaults to
    ``padding_mode="border"`` (``DVF2DDF`` to ``zeros``); pass the same to
    :func:`warp_field`. ``reflection`` agrees only with ``align_corners=True``:
    MONAI reflects about the border voxels' centres. Checked against MONAI 1.6.1's
    ``Warp`` (zeros, border, reflection) and ``DVF2DDF`` (``integrate_velocity(...,
    padding_mode="zeros")``) in ``tests/geometry/test_peers_medical.py`` (float64, to 1e-10).

    Args:
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, the module convention.
        align_corners: the frame of ``u``.

    Returns:
        ``ddf``, ``u``'s shape.

    Example:
        >>> u = torch.zeros(1, 2, 4, 8)
        >>> u[:, 1] = -0.5  # y: one row up of 4
        >>> to_monai(u)[0, :, 0, 0]
        tensor([-1.,  0.])
    """
    return field_to_pixels(u, align_corners, order="dhw")


def from_monai(ddf: Tensor, align_corners: bool = False) -> Tensor:
    """A MONAI ``ddf`` (voxels, channels ``([d,] h, w)``) in stnkit's convention: the inverse of :func:`to_monai`.

    ``warp_field(x, from_monai(ddf), padding_mode="border")`` samples ``x`` where
    ``monai.networks.blocks.Warp()(x, ddf)`` does with its default padding.

    Args:
        ddf: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)`` in voxels, channels in tensor axis order.
        align_corners: the frame of the result.

    Returns:
        ``u`` (channels ``(x, y[, z])``, normalised), ``ddf``'s shape.

    Example:
        >>> ddf = torch.zeros(1, 2, 4, 8)
        >>> ddf[:, 1] = 2.0  # two columns right
        >>> from_monai(ddf)[0, :, 0, 0]
        tensor([0.5000, 0.0000])
    """
    return field_from_pixels(ddf, align_corners, order="dhw")


def jacobian_determinant(u: Tensor, align_corners: bool = False) -> Tensor:
    """The Jacobian determinant of ``p -> p + u(p)`` at every voxel, by finite differences.

    Computed in voxel units: ``det(I + grad d)`` with ``d = field_to_pixels(u)`` and
    unit voxel spacing, central differences inside and one-sided ones at the
    borders (``torch.gradient``, ``edge_order=1``); axes of one voxel contribute no
    derivative. Identity gives 1 and the numbers compare with VoxelMorph's
    ``jacobian_determinant``. The normalised frame gives the same numbers: the change
    of frame is one diagonal scaling ``S`` on both sides, ``det(S J S^-1) = det J``,
    so an affine field ``u(p) = A p + t`` has determinant ``det(I + A)`` everywhere.
    ``u`` follows the module convention (channels ``(x, y[, z])``, normalised).

    Args:
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.
        align_corners: the frame of ``u`` (it sets the voxel spacing).

    Returns:
        ``(B, H, W)`` or ``(B, D, H, W)`` in ``u``'s dtype; ``<= 0`` where the map folds.

    Example:
        >>> u = grid_to_field(F.affine_grid(torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.5, 0.0]]]), [1, 1, 4, 4], False))
        >>> jacobian_determinant(u)[0, 0]
        tensor([3., 3., 3., 3.])
    """
    d = field_to_pixels(u, align_corners, order="xyz")
    n = d.ndim - 2
    # rows[k][j] = d(p_k + d_k) / dp_j; coordinate j (x = 0) runs along tensor axis n - 1 - j of d[:, k]
    rows = []
    for k in range(n):
        comp = d[:, k]
        row = []
        for j in range(n):
            dim = n - j  # the tensor axis of coordinate j in comp, (B, *spatial)
            g = torch.zeros_like(comp) if comp.shape[dim] < 2 else torch.gradient(comp, dim=dim, edge_order=1)[0]
            row.append(g + 1.0 if k == j else g)
        rows.append(row)
    if n == 2:
        (a, b), (c, e) = rows
        return a * e - b * c
    (a, b, c), (e, f, g), (h, i, j) = rows
    return a * (f * j - g * i) - b * (e * j - g * h) + c * (e * i - f * h)


def folding_fraction(u: Tensor, align_corners: bool = False) -> Tensor:
    """The fraction of voxels where ``p -> p + u(p)`` folds: :func:`jacobian_determinant` ``<= 0``.

    Args:
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, the module convention
            (channels ``(x, y[, z])``, normalised).
        align_corners: the frame of ``u``.

    Returns:
        ``(B,)`` in ``u``'s dtype, in ``[0, 1]``; not differentiable (a count).

    Example:
        >>> u = torch.zeros(1, 2, 4, 4)
        >>> u[:, 0] = -2.0 * field_grid(u)[..., 0]  # x -> -x: a mirror
        >>> folding_fraction(u)
        tensor([1.])
    """
    det = jacobian_determinant(u, align_corners)
    return (det <= 0).flatten(1).to(u.dtype).mean(1)


__all__ = [
    "compose_fields",
    "field_from_pixels",
    "field_grid",
    "field_to_pixels",
    "folding_fraction",
    "from_monai",
    "from_voxelmorph",
    "grid_to_field",
    "integrate_velocity",
    "invert_field",
    "jacobian_determinant",
    "to_monai",
    "to_voxelmorph",
    "warp_field",
]
