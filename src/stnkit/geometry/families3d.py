"""Transform families in 3-D: the same names, for volumes ``(B, C, D, H, W)``.

The convention is the 2-D one (:mod:`stnkit.geometry.families`) with a third
axis: parameters map **output** points to **input** points, normalised to
``[-1, 1]`` as in ``F.affine_grid``, coordinates ``(x, y, z)`` running along
``(W, H, D)`` (x first: the reverse of the tensor's axis order), ``align_corners``
as given (default ``False``: -1 and +1 are the outer faces of the border voxels;
``True``: their centres). A family's grid is ``(B, D, H, W, 3)``, ready for
``F.grid_sample`` on a 5-D input; points are ``(B, N, 3)``, x before y before z.

``get_transform(name, dims=3)`` gives these families, and
:func:`~stnkit.geometry.warp` picks them by itself for a 5-D ``x``
(``warp(volume, theta, "affine")`` is the 12-parameter affine).

=============  ==========  ====================================================
name           num_params  parameters
=============  ==========  ====================================================
translation    3           ``tx, ty, tz``
attention      4           ``s, tx, ty, tz`` (isotropic scale + translation)
rigid          6           ``rx, ry, rz, tx, ty, tz`` (rotation vector, radians)
similarity     7           ``log_s, rx, ry, rz, tx, ty, tz`` (log-scale)
affine         12          the 3x4 matrix, row-major: ``F.affine_grid``'s 3-D theta
projective     15          the 4x4 homography row-major, ``h44 = 1`` left out
                           (the denominator kept away from 0, as in 2-D)
tps            3 k^3       x, y, z offsets of a k x k x k grid of control points
                           (kernel ``U(r) = r``, :class:`ThinPlateSpline3D`)
=============  ==========  ====================================================

Rotations are **rotation vectors** (axis-angle: the axis ``r / |r|``, the angle
``|r|`` in radians, right-handed in ``(x, y, z)``), turned into matrices by
Rodrigues' formula ``R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2`` with
``K = [r]_x``, ``t = |r|``. Both coefficients are computed without
cancellation (``(1 - cos t) / t^2 = (sin(t/2) / (t/2))^2 / 2``) and by their
Taylor series for ``t^2 < 1e-4``, so ``R`` and its gradient are finite and exact
at (and near) the identity ``r = 0``. ``r = (0, 0, a)`` is the 2-D
``similarity``'s rotation by ``a`` in the ``(x, y)`` plane of every slice.
Matrices go back to rotation vectors through a unit quaternion picked by
Shepperd's method (stable near the angle ``pi`` too); the angle returned is in
``[0, pi]``.

References:
    M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial
    Transformer Networks", NeurIPS 2015 (arXiv:1506.02025).

    S. W. Shepperd, "Quaternion from rotation matrix", Journal of Guidance and
    Control 1(3), 1978.

    J. Duchon, "Splines minimizing rotation-invariant semi-norms in Sobolev
    spaces", 1977 (the 3-D thin-plate kernel ``r``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_finite, check_float_tensor, check_int, check_points_3d, check_size_3d, is_tracing
from .coords import GRID_LIMIT, base_grid_3d, cached_operator, finite_grid, linspace_coords
from .families import (
    _FOLD_CHUNK,
    _INVERSE_CHUNK,
    _TAME_MARGIN,
    TRANSFORMS_3D,
    MatrixFamily,
    TransformFamily,
    _check_batch,
    _other_dims_hint,
    _safe_denominator,
)

# below this squared angle the rotation's coefficients come from their Taylor series
_TAYLOR_THETA2 = 1e-4


def homogeneous_points_3d(
    out_size: tuple[int, int, int],
    align_corners: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The 3-D identity grid's points as rows ``(x, y, z, 1)``: ``(D*H*W, 4)``, depth outermost."""
    d, h, w = out_size
    zs, ys, xs = (linspace_coords(n, align_corners, dtype=torch.float64) for n in (d, h, w))
    gz, gy, gx = torch.meshgrid(zs, ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, gz, torch.ones_like(gx)], dim=-1).view(-1, 4)
    return pts.to(device=device, dtype=dtype or torch.float64)


def _points(size: tuple[int, int, int], align_corners: bool, like: Tensor) -> Tensor:
    dev, dt = like.device, like.dtype
    return cached_operator(
        ("homogeneous3d", *size, bool(align_corners), str(dev), dt),
        lambda: homogeneous_points_3d(size, align_corners, device=dev, dtype=dt),
    )


def rotation_matrix(rotvec: Tensor) -> Tensor:
    """``(B, 3, 3)`` rotation matrices of rotation vectors ``(B, 3)`` (Rodrigues, Taylor near 0).

    ``rotvec`` is axis times angle (radians), in ``(x, y, z)`` order; see the module
    docstring for the formula and why it is finite (with its gradient) at 0.

    Example:
        >>> r = rotation_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
        >>> torch.allclose(r[0] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
        True
    """
    t2 = (rotvec * rotvec).sum(-1)
    small = t2 < _TAYLOR_THETA2
    t = torch.where(small, torch.ones_like(t2), t2).sqrt()  # never 0: no NaN gradient through sqrt
    sinc = torch.where(small, 1.0 - t2 / 6.0 * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0)), torch.sin(t) / t)
    half = torch.where(small, 1.0 - t2 / 24.0 * (1.0 - t2 / 80.0 * (1.0 - t2 / 168.0)), torch.sin(0.5 * t) / (0.5 * t))
    cosc = 0.5 * half * half  # (1 - cos t) / t^2, without the cancellation of 1 - cos t
    rx, ry, rz = rotvec.unbind(-1)
    zero = torch.zeros_like(rx)
    k = torch.stack([zero, -rz, ry, rz, zero, -rx, -ry, rx, zero], dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, device=rotvec.device, dtype=rotvec.dtype)
    return eye + sinc[:, None, None] * k + cosc[:, None, None] * (k @ k)


def rotation_vector(r: Tensor) -> Tensor:
    """Rotation vectors ``(B, 3)`` of rotation matrices ``(B, 3, 3)``: the inverse of :func:`rotation_matrix`.

    Through the unit quaternion of Shepperd's method (the pivot with the largest
    ``4 q_i^2``, so it is accurate near the angle ``pi`` as well as near 0); the
    angle ``|result|`` is in ``[0, pi]``. A matrix that is not a rotation gives
    the vector of some nearby rotation.

    Example:
        >>> v = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64)
        >>> torch.allclose(rotation_vector(rotation_matrix(v)), v)
        True
    """
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r.reshape(-1, 9).unbind(-1)
    t = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], dim=-1)
    cand = torch.stack(
        [
            torch.stack([t[:, 0], r21 - r12, r02 - r20, r10 - r01], dim=-1),
            torch.stack([r21 - r12, t[:, 1], r01 + r10, r02 + r20], dim=-1),
            torch.stack([r02 - r20, r01 + r10, t[:, 2], r12 + r21], dim=-1),
            torch.stack([r10 - r01, r02 + r20, r12 + r21, t[:, 3]], dim=-1),
        ],
        dim=1,
    )  # (B, 4 pivots, (w, x, y, z))
    k = t.argmax(-1)
    idx = torch.arange(r.shape[0], device=r.device)
    q = cand[idx, k] / (2.0 * t[idx, k].clamp_min(1e-30).sqrt()).unsqueeze(-1)  # the pivot's t is >= 1 for a rotation
    q = torch.where(q[:, :1] < 0, -q, q)  # w >= 0: the angle in [0, pi]
    w, v = q[:, 0], q[:, 1:]
    n2 = (v * v).sum(-1)
    small = n2 < 1e-12
    n = torch.where(small, torch.ones_like(n2), n2).sqrt()
    wsafe = torch.where(small, torch.ones_like(w), w)  # w ~ 1 there
    factor = torch.where(small, 2.0 / wsafe * (1.0 - n2 / (3.0 * wsafe * wsafe)), 2.0 * torch.atan2(n, w) / n)
    return v * factor.unsqueeze(-1)


class MatrixFamily3D(MatrixFamily):
    """3-D families that are 4x4 matrices acting on homogeneous coordinates ``(x, y, z, 1)``.

    ``matrix(params)`` is ``(B, 4, 4)`` and maps output to input:
    ``[x_in, y_in, z_in, w] = M @ [x_out, y_out, z_out, 1]`` (normalised,
    ``F.affine_grid``'s frame, ``align_corners`` as given to :meth:`grid`), then
    divided by ``w``; ``M[:, :3]`` is ``F.affine_grid``'s ``(B, 3, 4)`` theta for
    the affine families. :meth:`compose` and :meth:`inverse` act through the
    matrices, in the 2-D order: ``compose(a, b)`` maps points by ``b`` first,
    and warping by ``a`` then by ``b`` equals one warp by ``compose(a, b)``.

    Example:
        >>> from stnkit.geometry import get_transform
        >>> fam = get_transform("attention", dims=3)
        >>> fam.matrix(torch.tensor([[0.5, 0.1, -0.2, 0.3]]))[0]
        tensor([[ 0.5000,  0.0000,  0.0000,  0.1000],
                [ 0.0000,  0.5000,  0.0000, -0.2000],
                [ 0.0000,  0.0000,  0.5000,  0.3000],
                [ 0.0000,  0.0000,  0.0000,  1.0000]])
    """

    dims = 3

    @classmethod
    def _shape_text(cls) -> str:
        return f"(B, {cls.num_params})"

    def check_params(self, params: object, name: str = "params") -> Tensor:
        """Validate ``params`` ``(B, num_params)`` (floating, finite, ``B > 0``); returns it unchanged.

        Example:
            >>> from stnkit.geometry import get_transform
            >>> get_transform("translation", dims=3).check_params(torch.zeros(1, 2))
            Traceback (most recent call last):
            ...
            ValueError: params for the 3-D transform 'translation' must have shape (B, 3), got shape (1, 2); that is the shape of the 2-D 'translation', which warps a (B, C, H, W) image (get_transform('translation', dims=2))
        """
        params = check_float_tensor(name, params)
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"{name} for the 3-D transform {self.name!r} must have shape {self._shape_text()}, "
                f"got shape {tuple(params.shape)}{_other_dims_hint(self, params)}"
            )
        if params.shape[0] == 0:
            raise ValueError(f"{name} must have a non-empty batch, got shape {tuple(params.shape)}")
        check_finite(name, params)
        return params

    def from_matrix(self, m: Tensor) -> Tensor:
        """Parameters ``(B, num_params)`` of this family from ``(B, 4, 4)`` matrices (which must lie in the family)."""
        m = check_float_tensor("m", m)
        if m.ndim != 3 or m.shape[-2:] != (4, 4):
            raise ValueError(f"m must have shape (B, 4, 4), got shape {tuple(m.shape)}")
        return self._from_matrix(m)

    def grid(self, params: Tensor, out_size: int | tuple[int, int, int], align_corners: bool = False) -> Tensor:
        """Sampling grid ``(B, D, H, W, 3)``: for each output voxel, the input point ``(x, y, z)`` to read.

        ``grid[b, k, i, j] = T_params[b](base_grid_3d[k, i, j])``, normalised as in
        ``F.affine_grid`` (``align_corners`` as there, ``False`` by default), for
        ``F.grid_sample`` on a ``(B, C, D, H, W)`` input with the same ``align_corners``.
        Finite and within ``GRID_LIMIT`` for any finite parameters; float16 /
        bfloat16 parameters give a grid made in float32 and cast back.

        Args:
            params: ``(B, num_params)``.
            out_size: ``(D, H, W)`` of the output, or an int for a cube.
            align_corners: the frame of the grid.
        """
        params = self.check_params(params)
        size = check_size_3d("out_size", out_size)
        if params.dtype in (torch.float16, torch.bfloat16):
            return self._grid(params.float(), size, align_corners).to(params.dtype)
        return self._grid(params, size, align_corners)

    def _grid(self, params: Tensor, size: tuple[int, int, int], align_corners: bool) -> Tensor:
        theta = self._matrix(params)[:, :3]  # (B, 3, 4)
        g = (_points(size, align_corners, params) @ theta.transpose(1, 2)).view(-1, *size, 3)
        # |grid| <= sum of a row's |entries| on [-1, 1]^3; "not <=" also catches NaN (from inf * 0)
        if is_tracing() or not float(theta.detach().abs().sum(-1).amax()) <= GRID_LIMIT:
            g = finite_grid(g)
        return g

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Map points ``(B, N, 3)`` (x, y, z; normalised) from output to input coordinates.

        ``transform_points(params, base_grid_3d)`` equals ``grid(params)`` point for point.
        """
        params = self.check_params(params)
        points = check_points_3d("points", points)
        _check_batch(params, points, "points")
        m = self._matrix(params).to(points.dtype)
        out = points @ m[:, :3, :3].transpose(1, 2) + m[:, None, :3, 3]
        if self.is_affine:
            return out
        w = points @ m[:, 3:, :3].transpose(1, 2) + m[:, None, 3:, 3]
        return out / _safe_denominator(w)


def _affine_rows(a: Tensor, t: Tensor) -> Tensor:
    """``(B, 4, 4)`` from a linear part ``(B, 3, 3)`` and a translation ``(B, 3)``."""
    top = torch.cat([a, t.unsqueeze(-1)], dim=-1)
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], device=a.device, dtype=a.dtype).expand(a.shape[0], 1, 4)
    return torch.cat([top, last], dim=1)


class Translation3D(MatrixFamily3D):
    """``tx, ty, tz``: the output voxel at ``p`` reads the input at ``p + t`` (normalised, x, y, z).

    ``tx = 2 / W`` is one voxel along the width (``align_corners=False``); a
    positive ``tz`` moves the content towards the first slices.

    Example:
        >>> from stnkit.geometry import warp
        >>> col = torch.arange(4.0).view(1, 1, 4, 1, 1)  # four slices along D
        >>> warp(col, torch.tensor([[0.0, 0.0, 0.5]]), "translation", mode="nearest").flatten()
        tensor([1., 2., 3., 0.])
    """

    name = "translation"
    num_params = 3

    def _identity_vector(self):
        return [0.0, 0.0, 0.0]

    def _random_std(self):
        return [0.2, 0.2, 0.2]

    def _matrix(self, p):
        eye = torch.eye(3, device=p.device, dtype=p.dtype).expand(p.shape[0], 3, 3)
        return _affine_rows(eye, p)

    def _from_matrix(self, m):
        return m[:, :3, 3].clone()


class Attention3D(MatrixFamily3D):
    """``s, tx, ty, tz``: isotropic scale then translation, ``T(p) = s p + t`` (the 2-D attention's layout).

    ``s < 1`` zooms in on a box of the input centred at ``t``.

    Example:
        >>> Attention3D().transform_points(torch.tensor([[0.5, 0.2, 0.0, -0.1]]), torch.tensor([[[1.0, 1.0, 1.0]]]))
        tensor([[[0.7000, 0.5000, 0.4000]]])
    """

    name = "attention"
    num_params = 4

    def _identity_vector(self):
        return [1.0, 0.0, 0.0, 0.0]

    def _random_std(self):
        return [0.15, 0.15, 0.15, 0.15]

    def _matrix(self, p):
        eye = torch.eye(3, device=p.device, dtype=p.dtype)
        return _affine_rows(p[:, :1, None] * eye, p[:, 1:])

    def _from_matrix(self, m):
        s = (m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]) / 3.0
        return torch.cat([s[:, None], m[:, :3, 3]], dim=1)


class Rigid3D(MatrixFamily3D):
    """``rx, ry, rz, tx, ty, tz``: ``T(p) = R(r) p + t``, ``R`` the rotation of the rotation vector ``r``.

    ``r`` is axis times angle in radians, ``(x, y, z)`` order; :func:`rotation_matrix`
    (Rodrigues with a Taylor branch near 0, so gradients are finite at the
    identity) makes ``R``. ``r = (0, 0, a)`` turns every slice as the 2-D
    ``similarity`` with angle ``a``. :meth:`from_matrix` returns the rotation
    vector with angle in ``[0, pi]``.

    Example:
        >>> fam = Rigid3D()
        >>> m = fam.matrix(torch.tensor([[0.0, 0.0, math.pi / 2, 0.1, 0.0, 0.0]]))
        >>> torch.allclose(m[0, :3, :3], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)
        True
    """

    name = "rigid"
    num_params = 6

    def _identity_vector(self):
        return [0.0] * 6

    def _random_std(self):
        return [0.25, 0.25, 0.25, 0.1, 0.1, 0.1]

    def bound(self, raw):
        t = torch.tanh(raw)
        return torch.cat([math.pi * t[:, :3], t[:, 3:]], dim=1)

    def _matrix(self, p):
        return _affine_rows(rotation_matrix(p[:, :3]), p[:, 3:])

    def _from_matrix(self, m):
        return torch.cat([rotation_vector(m[:, :3, :3]), m[:, :3, 3]], dim=1)


class Similarity3D(MatrixFamily3D):
    """``log_s, rx, ry, rz, tx, ty, tz``: ``T(p) = exp(log_s) R(r) p + t``.

    :class:`Rigid3D` with an isotropic scale. Unlike the 2-D ``similarity``
    (whose first parameter is the scale ``s``) the scale is given by its **log**:
    a negative 3-D scale would be a point reflection, not a similarity of the
    same orientation, and ``log_s`` keeps every value a proper one (identity: all zeros).
    :meth:`from_matrix` reads the scale as ``|A|_F / sqrt(3)``.

    Example:
        >>> fam = Similarity3D()
        >>> p = torch.tensor([[math.log(2.0), 0.0, 0.0, 0.0, 0.1, 0.0, 0.0]])  # scale 2, no rotation
        >>> fam.transform_points(p, torch.tensor([[[0.5, 0.25, -0.5]]]))
        tensor([[[ 1.1000,  0.5000, -1.0000]]])
    """

    name = "similarity"
    num_params = 7

    def _identity_vector(self):
        return [0.0] * 7

    def _random_std(self):
        return [0.1, 0.25, 0.25, 0.25, 0.1, 0.1, 0.1]

    def bound(self, raw):
        t = torch.tanh(raw)
        return torch.cat([t[:, :1], math.pi * t[:, 1:4], t[:, 4:]], dim=1)

    def _matrix(self, p):
        return _affine_rows(torch.exp(p[:, :1, None]) * rotation_matrix(p[:, 1:4]), p[:, 4:])

    def _from_matrix(self, m):
        a = m[:, :3, :3]
        s = a.reshape(-1, 9).norm(dim=-1) / math.sqrt(3.0)
        r = rotation_vector(a / s[:, None, None])
        return torch.cat([torch.log(s)[:, None], r, m[:, :3, 3]], dim=1)


class Affine3D(MatrixFamily3D):
    """The 3x4 matrix ``[[a, b, c, tx], [d, e, f, ty], [g, h, i, tz]]`` row-major: ``F.affine_grid``'s 3-D theta.

    ``(B, 12)``, or ``(B, 3, 4)`` as ``F.affine_grid`` takes it; its grid equals
    ``F.affine_grid(theta.view(B, 3, 4), (B, C, D, H, W))`` with the same
    ``align_corners`` (coordinates ``(x, y, z)`` along ``(W, H, D)``).

    Example:
        >>> theta = torch.tensor([[[0.8, -0.2, 0.1, 0.1], [0.3, 0.9, 0.0, 0.0], [0.0, 0.1, 1.1, -0.2]]])
        >>> ref = torch.nn.functional.affine_grid(theta, [1, 1, 3, 4, 5], align_corners=True)
        >>> torch.allclose(Affine3D().grid(theta, (3, 4, 5), align_corners=True), ref, atol=1e-6)
        True
    """

    name = "affine"
    num_params = 12

    @classmethod
    def accepts_shape(cls, shape):
        return shape in ((12,), (3, 4))

    @classmethod
    def _shape_text(cls):
        return "(B, 12) or (B, 3, 4)"

    def _identity_vector(self):
        return [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    def _random_std(self):
        return [0.15, 0.15, 0.15, 0.1] * 3

    def check_params(self, params, name="params"):
        # Accept affine_grid's (B, 3, 4) theta as well as (B, 12).
        if isinstance(params, Tensor) and params.ndim == 3 and params.shape[1:] == (3, 4):
            params = params.reshape(params.shape[0], 12)
        return super().check_params(params, name)

    def _matrix(self, p):
        last = torch.tensor([0.0, 0.0, 0.0, 1.0], device=p.device, dtype=p.dtype).expand(p.shape[0], 4)
        return torch.cat([p, last], dim=1).view(-1, 4, 4)

    def _from_matrix(self, m):
        return m[:, :3].reshape(-1, 12).clone()


class Projective3D(MatrixFamily3D):
    """A 3-D homography with ``h44 = 1``: ``T(p) = (H [p; 1])_{xyz} / (H [p; 1])_w``.

    ``h = (h11 .. h14, h21 .. h24, h31 .. h34, h41, h42, h43)``, the 4x4 matrix
    row-major without its last entry; ``p = (x, y, z)`` normalised as in
    ``F.affine_grid``'s 3-D frame (``align_corners`` as given). As in 2-D, the
    denominator ``w`` is kept at least ``1e-8`` away from 0 (with its sign), and
    the grid is clamped to ``GRID_LIMIT``, so output points that ``H`` sends to
    infinity read the padding, never NaN. With ``h41 = h42 = h43 = 0`` this is
    the 3-D affine family.

    Example:
        >>> h = torch.tensor([[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0.5, 0, 0]])
        >>> Projective3D().transform_points(h, torch.tensor([[[1.0, 1.0, 1.0]]]))  # w = 0.5 * 1 + 1
        tensor([[[0.6667, 0.6667, 0.6667]]])
    """

    name = "projective"
    num_params = 15
    is_affine = False

    def _identity_vector(self):
        return [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]

    def _random_std(self):
        return [0.1] * 15

    def bound(self, raw):
        t = torch.tanh(raw)
        ident = torch.tensor(self._identity_vector(), device=raw.device, dtype=raw.dtype)
        # perspective terms of at most 1/3 each: the plane w = 0 stays outside the open cube
        scale = torch.tensor([1.0] * 12 + [1.0 / 3.0] * 3, device=raw.device, dtype=raw.dtype)
        return ident + scale * t

    def _matrix(self, p):
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1).view(-1, 4, 4)

    def _from_matrix(self, m):
        m = m / _safe_denominator(m[:, 3:, 3:])
        return m.reshape(-1, 16)[:, :15].clone()

    def _grid(self, params, size, align_corners):
        m = self._matrix(params)
        pts = _points(size, align_corners, params)  # (N, 4)
        num = pts @ m[:, :3].transpose(1, 2)  # (B, N, 3)
        den = pts @ m[:, 3:].transpose(1, 2)  # (B, N, 1)
        if is_tracing() or not _projective_is_tame(m):
            return finite_grid(num / _safe_denominator(den)).view(-1, *size, 3)
        return (num / den).view(-1, *size, 3)


def _projective_is_tame(m: Tensor) -> bool:
    """True when ``w = g . p + 1`` stays above ``_TAME_MARGIN`` on ``[-1, 1]^3`` and the grid within ``GRID_LIMIT``."""
    m = m.detach()
    margin = 1.0 - m[:, 3, :3].abs().sum(-1)
    top = m[:, :3].abs().sum(-1).amax(-1)
    worst = torch.stack([margin.amin(), (top / margin.clamp_min(_TAME_MARGIN)).amax()]).tolist()
    # "not >=" / "not <=" are False for NaN: NaN (from inf - inf) takes the guarded path
    return worst[0] >= _TAME_MARGIN and worst[1] <= GRID_LIMIT


# points per chunk of the 3-D spline's weights (bounds the (N, K, 3) temporaries)
_TPS3D_POINT_CHUNK = 8192


def _tps3d_kernel(points: Tensor, c: Tensor) -> Tensor:
    """``U = r = |points - c|``: ``(..., N, K)`` for points ``(..., N, 3)`` and control points ``(K, 3)``.

    ``torch.cdist`` without its matrix-product shortcut (exact to rounding), whose gradient is 0, not
    NaN, at a control point.
    """
    c = c.expand(*points.shape[:-2], *c.shape)
    return torch.cdist(points, c, compute_mode="donot_use_mm_for_euclid_dist")


class ThinPlateSpline3D(TransformFamily):
    """Thin-plate spline in 3-D: a ``k x k x k`` grid of control points spanning ``[-1, 1]^3``.

    The 2-D :class:`~stnkit.geometry.ThinPlateSpline` with a third axis and the 3-D
    kernel ``U(r) = r`` (the fundamental solution of the 3-D biharmonic equation, up
    to sign and factor: the spline minimises the 3-D bending energy). Parameters are
    the ``(x, y, z)`` offsets of the control points, flattened as ``(B, 3 k^3)``, x
    before y before z per point, points in row-major order (z outermost, then y, x
    innermost: the volume's ``(D, H, W)`` order); zero offsets are the identity. The
    control point ``c_i`` of the output maps to ``c_i + d_i`` in the input
    (normalised, ``F.affine_grid``'s 3-D frame, ``align_corners`` as given to
    :meth:`grid`), and the spline interpolates in between:

    ``T(u) = sum_i w_i |u - c_i| + a_0 + A u``, with ``sum_i w_i = 0`` and
    ``sum_i w_i c_i^T = 0``. Affine maps are reproduced exactly. ``reg > 0``
    smooths instead of interpolating: the system is ``[[U - reg I, P], [P^T, 0]]``,
    which is scipy's ``RBFInterpolator(kernel="linear", smoothing=reg, degree=1)``
    (scipy's kernel is ``-r``, so its ``+ smoothing`` is this ``- reg``).

    As in 2-D the system's inverse is computed once (float64), the grid weights are
    cached per output size, and a batch costs one matrix product; :meth:`inverse_grid`
    inverts the spline by Newton's method, :meth:`jacobian_det` and :meth:`folds`
    tell where it is not locally invertible. There is no ``compose``: two splines do
    not compose into a spline (chain them point-wise with
    :func:`~stnkit.geometry.compose_grid`).

    Args:
        grid_size: ``k``, the control points per side (at least 2).
        reg: ``>= 0``; the smoothing (0: exact interpolation).

    Example:
        >>> fam = ThinPlateSpline3D(grid_size=3)
        >>> fam.num_params, fam.control_points.shape
        (81, torch.Size([27, 3]))
        >>> offsets = torch.zeros(1, 81)
        >>> offsets[0, 39:42] = torch.tensor([0.1, -0.2, 0.05])  # move the centre control point (index 13)
        >>> fam.transform_points(offsets, torch.tensor([[[0.0, 0.0, 0.0]]]))
        tensor([[[ 0.1000, -0.2000,  0.0500]]])

    References:
        J. Duchon, "Splines minimizing rotation-invariant semi-norms in Sobolev
        spaces", 1977; F. L. Bookstein, IEEE TPAMI 11(6), 1989 (the 2-D spline).
    """

    name = "tps"
    dims = 3

    def __init__(self, grid_size: int = 4, reg: float = 0.0):
        check_int("grid_size", grid_size, low=2)
        if not math.isfinite(reg) or reg < 0:
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        self.grid_size = grid_size
        self.reg = float(reg)
        self.num_params = 3 * grid_size**3
        c = torch.linspace(-1.0, 1.0, grid_size, dtype=torch.float64)
        cz, cy, cx = torch.meshgrid(c, c, c, indexing="ij")
        self.control_points = torch.stack([cx, cy, cz], dim=-1).reshape(-1, 3)  # (K, 3)
        k = self.control_points.shape[0]
        # L = [[U - reg I, P], [P^T, 0]] with P = [1, x, y, z]
        r = _tps3d_kernel(self.control_points, self.control_points)
        p = torch.cat([torch.ones(k, 1, dtype=torch.float64), self.control_points], dim=1)
        top = torch.cat([r - self.reg * torch.eye(k, dtype=torch.float64), p], dim=1)
        bottom = torch.cat([p.T, torch.zeros(4, 4, dtype=torch.float64)], dim=1)
        self._l_inv = torch.linalg.inv(torch.cat([top, bottom], dim=0))[:, :k]  # (K+4, K)
        self._grid_cache: dict = {}

    def __repr__(self):
        return f"ThinPlateSpline3D(grid_size={self.grid_size}, reg={self.reg})"

    def _identity_vector(self):
        return [0.0] * self.num_params

    def _random_std(self):
        return [0.3 / (self.grid_size - 1)] * self.num_params

    def check_params(self, params: object, name: str = "params") -> Tensor:
        """Validate ``params`` ``(B, 3 k^3)`` (floating, finite, ``B > 0``); returns it unchanged.

        Example:
            >>> ThinPlateSpline3D(grid_size=2).check_params(torch.zeros(1, 8))
            Traceback (most recent call last):
            ...
            ValueError: params for the 3-D transform 'tps' (grid_size=2) must have shape (B, 24), got shape (1, 8)
        """
        params = check_float_tensor(name, params)
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"{name} for the 3-D transform 'tps' (grid_size={self.grid_size}) must have shape "
                f"(B, {self.num_params}), got shape {tuple(params.shape)}"
            )
        if params.shape[0] == 0:
            raise ValueError(f"{name} must have a non-empty batch, got shape {tuple(params.shape)}")
        check_finite(name, params)
        return params

    def weights(self, points: Tensor) -> Tensor:
        """Weights ``(..., N, K)`` with ``T(points) = weights @ targets`` (targets = control points + offsets).

        ``points`` is ``(..., N, 3)``, normalised, x before y before z; each row sums to 1.

        Example:
            >>> fam = ThinPlateSpline3D(grid_size=2)
            >>> torch.allclose(fam.weights(fam.control_points), torch.eye(8, dtype=torch.float64))
            True
        """
        c = self.control_points.to(device=points.device, dtype=points.dtype)
        l_inv = self._l_inv.to(device=points.device, dtype=points.dtype)
        r = _tps3d_kernel(points, c)
        basis = torch.cat([r, torch.ones_like(points[..., :1]), points], dim=-1)  # (..., N, K+4)
        return basis @ l_inv

    def weight_gradients(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``d weights / dx``, ``/ dy``, ``/ dz``, each ``(..., N, K)``: the Jacobian at ``points`` has
        the columns ``wx @ targets``, ``wy @ targets``, ``wz @ targets`` (dT/dx, dT/dy, dT/dz).

        ``dU/du = (u - c) / r``; at a control point itself (where ``r`` has no derivative)
        that term is taken as 0, the mean of its one-sided derivatives.

        Example:
            >>> fam = ThinPlateSpline3D(grid_size=3)
            >>> pts = torch.tensor([[0.3, -0.4, 0.1]], dtype=torch.float64)
            >>> jac = torch.stack([g @ fam.control_points for g in fam.weight_gradients(pts)], -1)
            >>> torch.allclose(jac, torch.eye(3, dtype=torch.float64))  # the identity's Jacobian
            True
        """
        c = self.control_points.to(device=points.device, dtype=points.dtype)
        l_inv = self._l_inv.to(device=points.device, dtype=points.dtype)
        d, r = points.unsqueeze(-2) - c, _tps3d_kernel(points, c)  # (..., N, K, 3), (..., N, K)
        inv_r = torch.where(r > 0, 1.0 / torch.where(r > 0, r, torch.ones_like(r)), torch.zeros_like(r))
        zeros, ones = torch.zeros_like(points[..., :1]), torch.ones_like(points[..., :1])
        out = []
        for axis in range(3):
            poly = [zeros, *(ones if j == axis else zeros for j in range(3))]
            out.append(torch.cat([d[..., axis] * inv_r, *poly], dim=-1) @ l_inv)
        return out[0], out[1], out[2]

    def grid_weights(
        self,
        out_size: int | tuple[int, int, int],
        align_corners: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The cached identity grid ``(D*H*W, 3)`` and weights ``(D*H*W, K)`` for an output size.

        Computed once in float64 (in chunks of points); the grid is
        ``identity + weights @ offsets``, which keeps the identity exact.

        Example:
            >>> ident, w = ThinPlateSpline3D(grid_size=2).grid_weights((2, 3, 4))
            >>> ident.shape, w.shape
            (torch.Size([24, 3]), torch.Size([24, 8]))
        """
        ident, weights, _ = self._grid_operator(out_size, align_corners, device=device, dtype=dtype)
        return ident, weights

    def _grid_operator(self, out_size, align_corners=False, *, device=None, dtype=None):
        """``(ident, weights, reach)``: the grid is ``ident + weights @ offsets``, and no point moves
        further than ``reach * max|offsets|`` from the identity."""
        size = check_size_3d("out_size", out_size)
        dtype = dtype or torch.get_default_dtype()
        key = (*size, bool(align_corners), str(device), dtype)
        cached = self._grid_cache.get(key)
        if cached is None:
            pts = base_grid_3d(size, align_corners, dtype=torch.float64).view(-1, 3)
            weights = torch.cat([self.weights(p) for p in pts.split(_TPS3D_POINT_CHUNK)])
            reach = weights.abs().sum(-1).max()
            cached = tuple(t.to(device=device, dtype=dtype) for t in (pts, weights, reach))
            if not is_tracing():  # FakeTensors made while exporting would poison later eager calls
                self._grid_cache[key] = cached
        return cached

    def coefficients(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The spline ``T(u) = sum_i w_i |u - c_i| + a_0 + A u``: kernel weights ``(B, K, 3)`` and the
        affine part ``(B, 4, 3)`` (rows 1, x, y, z).

        Example:
            >>> w, a = ThinPlateSpline3D(grid_size=2).coefficients(torch.zeros(1, 24, dtype=torch.float64))
            >>> bool(w.abs().max() < 1e-12), torch.allclose(a[0], torch.cat([torch.zeros(1, 3), torch.eye(3)]).double())
            (True, True)
        """
        params = self.check_params(params)
        coef = self._l_inv.to(device=params.device, dtype=params.dtype) @ self.targets(params)
        k = self.control_points.shape[0]
        return coef[:, :k], coef[:, k:]

    def targets(self, params: Tensor) -> Tensor:
        """Where the control points map in the input: ``(B, K, 3)``, control points plus offsets."""
        c = self.control_points.to(device=params.device, dtype=params.dtype)
        return c + params.view(params.shape[0], -1, 3)

    def grid(self, params: Tensor, out_size: int | tuple[int, int, int], align_corners: bool = False) -> Tensor:
        """Sampling grid ``(B, D, H, W, 3)``: for each output voxel, the input point ``(x, y, z)`` to read.

        ``F.affine_grid``'s 3-D frame (``align_corners`` as there); finite and within
        ``GRID_LIMIT`` for any finite parameters; float16 / bfloat16 parameters give
        a grid made in float32 and cast back.

        Example:
            >>> fam = ThinPlateSpline3D(grid_size=2)
            >>> from stnkit.geometry import base_grid_3d
            >>> ident = fam.identity(1, dtype=torch.float64)
            >>> torch.equal(fam.grid(ident, (2, 3, 4))[0], base_grid_3d((2, 3, 4), dtype=torch.float64))
            True
        """
        params = self.check_params(params)
        size = check_size_3d("out_size", out_size)
        if params.dtype in (torch.float16, torch.bfloat16):
            return self._grid(params.float(), size, align_corners).to(params.dtype)
        return self._grid(params, size, align_corners)

    def _grid(self, params, size, align_corners):
        ident, weights, reach = self._grid_operator(size, align_corners, device=params.device, dtype=params.dtype)
        # (N, K) @ (B, K, 3): one batched product (an interleaved (3K, 3N) operator as in 2-D would hold
        # 9x the weights, 600 MB at 64^3)
        g = (ident + weights @ params.view(params.shape[0], -1, 3)).view(-1, *size, 3)
        if is_tracing() or not 1.0 + float(reach) * float(params.detach().abs().amax()) <= GRID_LIMIT:
            g = finite_grid(g)
        return g

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Map points ``(B, N, 3)`` (x, y, z; normalised) from output to input coordinates."""
        params = self.check_params(params)
        points = check_points_3d("points", points)
        _check_batch(params, points, "points")
        return self.weights(points) @ self.targets(params).to(points.dtype)

    # -- the spline's inverse and its Jacobian ------------------------------------------
    def inverse_grid(
        self, params: Tensor, out_size: int | tuple[int, int, int], align_corners: bool = False, *, iters: int = 7
    ) -> Tensor:
        """Sampling grid ``(B, D, H, W, 3)`` of the inverse spline, solved by Newton's method (as in 2-D).

        For each voxel ``v`` of an ``out_size`` frame in the *input*'s normalised
        coordinates (``(x, y, z)``, ``F.affine_grid``'s 3-D frame), the output point
        ``u`` with ``T(u) = v``: ``sample(warp(x, params, "tps"), inverse_grid(params,
        x's size))`` brings a warped volume back onto ``x``'s frame. Newton starts from
        the inverse of the spline's affine part and takes ``iters`` steps in float64,
        each clamped to 0.5 per coordinate; the 3x3 systems are solved by Cramer's
        rule. Where the spline folds (:meth:`folds`) the inverse is not unique.

        Returns:
            ``(B, D, H, W, 3)`` in the dtype and on the device of ``params``;
            differentiable in ``params`` (through the unrolled steps).

        Example:
            >>> tps = ThinPlateSpline3D(grid_size=3)
            >>> params = 0.05 * torch.randn(1, 81, generator=torch.Generator().manual_seed(0))
            >>> u = tps.inverse_grid(params, (3, 4, 5))
            >>> from stnkit.geometry import base_grid_3d
            >>> v = base_grid_3d((3, 4, 5)).view(1, -1, 3)
            >>> bool((tps.transform_points(params, u.reshape(1, -1, 3)) - v).abs().max() < 1e-5)
            True
        """
        params = self.check_params(params)
        size = check_size_3d("out_size", out_size)
        check_int("iters", iters)
        v = base_grid_3d(size, align_corners, device=params.device, dtype=torch.float64).view(-1, 3)
        parts = [
            torch.cat([self._newton_inverse(p, vc, iters) for vc in v.split(_TPS3D_POINT_CHUNK)], dim=1)
            for p in params.split(_INVERSE_CHUNK)
        ]
        return torch.cat(parts).to(params.dtype).view(-1, *size, 3)

    def _newton_inverse(self, params: Tensor, v: Tensor, iters: int) -> Tensor:
        """``(n, M, 3)``: Newton's solution ``u`` of ``T(u) = v`` for points ``v`` ``(M, 3)``."""
        params = params.double()
        tgt = self.targets(params)  # (n, K, 3)
        _, a = self.coefficients(params)  # (n, 4, 3), rows 1, x, y, z
        v = v.expand(params.shape[0], -1, -1)
        u = torch.linalg.solve(a[:, 1:].transpose(1, 2), (v - a[:, None, 0]).transpose(1, 2)).transpose(1, 2)
        for _ in range(iters):
            r = self.weights(u) @ tgt - v
            jx, jy, jz = (g @ tgt for g in self.weight_gradients(u))  # the Jacobian's columns
            u = u - _solve_columns(jx, jy, jz, r).clamp(-0.5, 0.5)
        return u

    def jacobian_det(self, params: Tensor, out_size: int | tuple[int, int, int], align_corners: bool = False) -> Tensor:
        """Determinant of the spline's Jacobian ``dT/du`` at the voxel centres of an output frame: ``(B, D, H, W)``.

        Exact derivatives (:meth:`weight_gradients`), weights cached per size; 1
        everywhere for the identity; ``<= 0`` where the spline folds or mirrors.

        Example:
            >>> tps = ThinPlateSpline3D(grid_size=2)
            >>> shrink = tps.control_points.float().view(1, 24) * -0.5  # T(u) = u / 2: det 1/8
            >>> torch.allclose(tps.jacobian_det(shrink, 3), torch.full((1, 3, 3, 3), 0.125))
            True
        """
        params = self.check_params(params)
        size = check_size_3d("out_size", out_size)
        return self._jacobian_det(params, size, align_corners).view(-1, *size)

    def _jacobian_det(self, params: Tensor, size: tuple[int, int, int], align_corners: bool) -> Tensor:
        key = ("jacobian", *size, bool(align_corners), str(params.device), params.dtype)
        cached = self._grid_cache.get(key)
        if cached is None:
            pts = base_grid_3d(size, align_corners, dtype=torch.float64).view(-1, 3)
            chunks = [self.weight_gradients(p) for p in pts.split(_TPS3D_POINT_CHUNK)]
            cached = tuple(torch.cat(g).to(device=params.device, dtype=params.dtype) for g in zip(*chunks))
            if not is_tracing():
                self._grid_cache[key] = cached
        tgt = self.targets(params)
        a, b, c = (g @ tgt for g in cached)  # (B, M, 3) each: dT/dx, dT/dy, dT/dz
        return (a * torch.linalg.cross(b, c)).sum(-1)

    def folds(self, params: Tensor, out_size: int | tuple[int, int, int], align_corners: bool = False) -> Tensor:
        """``(B,)`` bool: True where the spline folds an output frame onto itself (a voxel with det <= 0).

        Example:
            >>> tps = ThinPlateSpline3D(grid_size=3)
            >>> params = torch.zeros(2, 81)
            >>> params[1, 39] = 1.5  # push the centre control point past its right neighbour
            >>> tps.folds(params, 8)
            tensor([False,  True])
        """
        params = self.check_params(params)
        size = check_size_3d("out_size", out_size)
        parts = [(self._jacobian_det(p, size, align_corners) <= 0).any(dim=1) for p in params.split(_FOLD_CHUNK)]
        return torch.cat(parts)


def _solve_columns(a: Tensor, b: Tensor, c: Tensor, r: Tensor) -> Tensor:
    """``J^-1 r`` for the 3x3 matrices ``J = [a | b | c]`` (columns, ``(..., 3)`` each), by Cramer's rule.

    The rows of ``J^-1`` are ``b x c``, ``c x a``, ``a x b`` over ``det J = a . (b x c)``; a
    determinant below 1e-12 in size is replaced by 1e-12 (with its sign), as in 2-D.
    """
    bc, ca, ab = torch.linalg.cross(b, c), torch.linalg.cross(c, a), torch.linalg.cross(a, b)
    det = (a * bc).sum(-1, keepdim=True)
    det = torch.where(det.abs() < 1e-12, torch.where(det < 0, -1e-12, 1e-12) * torch.ones_like(det), det)
    return (
        torch.cat([(bc * r).sum(-1, keepdim=True), (ca * r).sum(-1, keepdim=True), (ab * r).sum(-1, keepdim=True)], -1)
        / det
    )


for _cls in (Translation3D, Attention3D, Rigid3D, Similarity3D, Affine3D, Projective3D, ThinPlateSpline3D):
    TRANSFORMS_3D[_cls.name] = _cls

__all__ = [
    "Affine3D",
    "Attention3D",
    "MatrixFamily3D",
    "Projective3D",
    "Rigid3D",
    "Similarity3D",
    "ThinPlateSpline3D",
    "Translation3D",
    "homogeneous_points_3d",
    "rotation_matrix",
    "rotation_vector",
]
