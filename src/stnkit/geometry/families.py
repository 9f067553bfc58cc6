"""Transform families: how a parameter vector becomes a sampling grid.

Every family follows stnkit's one convention (see :mod:`stnkit.geometry.coords`):
parameters map **output** coordinates to **input** coordinates, normalised to
``[-1, 1]``, x before y, ``align_corners=False`` unless stated.

=============  ==========  ==============================================
name           num_params  parameters
=============  ==========  ==============================================
translation    2           ``tx, ty``
attention      3           ``s, tx, ty`` (isotropic scale + translation)
similarity     4           ``s, angle, tx, ty`` (angle in radians)
affine         6           the 2x3 matrix, row-major, ``F.affine_grid`` layout
projective     8           ``h11 h12 h13 h21 h22 h23 h31 h32`` (``h33 = 1``)
tps            2 k^2       x, y offsets of a k x k grid of control points
=============  ==========  ==============================================

A family turns ``params (B, num_params)`` into a sampling grid
``(B, H, W, 2)`` (:meth:`TransformFamily.grid`) or maps points ``(B, N, 2)``
(:meth:`TransformFamily.transform_points`); :func:`get_transform` looks one up
by name.

References:
    M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial
    Transformer Networks", NeurIPS 2015 (arXiv:1506.02025): the affine,
    attention, projective and thin-plate-spline transformers.

    F. L. Bookstein, "Principal warps: thin-plate splines and the
    decomposition of deformations", IEEE TPAMI 11(6), 1989: the thin-plate spline.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from .._checks import check_finite, check_float_tensor, check_int, check_points, check_size, is_tracing
from .coords import (
    GRID_LIMIT,
    _solve,
    affine_operator,
    base_grid,
    cached_operator,
    finite_grid,
    homogeneous_points,
    interleave_xy,
    normalization_matrix,
)

_EPS = 1e-8
# a homography whose denominator stays above this on the whole square needs no guard
_TAME_MARGIN = 1e-3
# samples per chunk of ThinPlateSpline.inverse_grid / .folds (bounds the (B, H*W, K) temporaries)
_INVERSE_CHUNK = 256
_FOLD_CHUNK = 2048


class TransformFamily:
    """Base class of a transform family. Subclasses set ``name`` and ``num_params``.

    Every family follows one convention: parameters ``(B, num_params)`` map
    **output** points to **input** points, normalised to ``[-1, 1]``, x before
    y, in the frame of ``F.affine_grid`` (``align_corners`` as given to
    :meth:`grid`, ``False`` by default).

    Example:
        >>> fam = get_transform("similarity")
        >>> fam.name, fam.num_params
        ('similarity', 4)
        >>> p = fam.identity(2)
        >>> p
        tensor([[1., 0., 0., 0.],
                [1., 0., 0., 0.]])
        >>> fam.grid(p, (3, 5)).shape
        torch.Size([2, 3, 5, 2])
    """

    name: str = ""
    num_params: int = 0
    is_matrix: bool = False
    dims: int = 2  # 2: images (B, C, H, W); 3: volumes (B, C, D, H, W), see stnkit.geometry.families3d

    # -- parameters -----------------------------------------------------------------
    def identity(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Parameters of the identity transform, shape ``(batch_size, num_params)``.

        Example:
            >>> get_transform("attention").identity(1)
            tensor([[1., 0., 0.]])
        """
        check_int("batch_size", batch_size)
        base = torch.tensor(self._identity_vector(), device=device, dtype=dtype or torch.get_default_dtype())
        return base.expand(batch_size, self.num_params).clone()

    def _identity_vector(self) -> list[float]:
        raise NotImplementedError

    def check_params(self, params: object, name: str = "params") -> Tensor:
        """Validate ``params`` ``(B, num_params)`` (floating, finite, ``B > 0``); returns it unchanged.

        Raises ``TypeError``/``ValueError`` with a message naming ``name``.

        Example:
            >>> get_transform("translation").check_params(torch.zeros(1, 4))
            Traceback (most recent call last):
            ...
            ValueError: params for transform 'translation' must have shape (B, 2), got shape (1, 4)
        """
        params = check_float_tensor(name, params)
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"{name} for transform {self.name!r} must have shape (B, {self.num_params}), "
                f"got shape {tuple(params.shape)}{_other_dims_hint(self, params)}"
            )
        if params.shape[0] == 0:
            raise ValueError(f"{name} must have a non-empty batch, got shape {tuple(params.shape)}")
        check_finite(name, params)
        return params

    @classmethod
    def accepts_shape(cls, shape: tuple[int, ...]) -> bool:
        """Whether parameters of shape ``(B, *shape)`` fit this family (the class's own ``num_params``)."""
        return shape == (cls.num_params,)

    def bound(self, raw: Tensor) -> Tensor:
        """Squash unconstrained values into a safe range; ``raw = 0`` gives the identity.

        Used by ``SpatialTransformer(bounded=True)``: the default keeps every
        parameter within 1 of its identity value. ``raw`` and the result are
        ``(B, num_params)``.

        Example:
            >>> fam = get_transform("affine")
            >>> torch.equal(fam.bound(torch.zeros(2, 6)), fam.identity(2))
            True
            >>> bool((fam.bound(torch.full((1, 6), 1e9)) - fam.identity(1)).abs().max() <= 1)
            True
        """
        ident = torch.tensor(self._identity_vector(), device=raw.device, dtype=raw.dtype)
        return ident + torch.tanh(raw)

    def random(
        self,
        batch_size: int,
        strength: float = 1.0,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Random parameters around the identity: ``identity + strength * std * N(0, 1)``.

        ``std`` is a per-family default giving a visible but moderate warp at
        ``strength=1`` (used by the demo and the transformation-consistency loss).
        Returns ``(batch_size, num_params)``; the noise is drawn on the CPU from
        ``generator``, so a seed gives the same parameters on every device.

        Example:
            >>> fam = get_transform("projective")
            >>> p = fam.random(4, generator=torch.Generator().manual_seed(0))
            >>> p.shape
            torch.Size([4, 8])
            >>> torch.equal(fam.random(4, 0.0), fam.identity(4))
            True
        """
        ident = self.identity(batch_size, device=device, dtype=dtype)
        std = torch.tensor(self._random_std(), device=ident.device, dtype=ident.dtype)
        noise = torch.randn(ident.shape, generator=generator, dtype=ident.dtype).to(ident.device)
        return ident + strength * std * noise

    def _random_std(self) -> list[float]:
        return [0.1] * self.num_params

    # -- geometry ---------------------------------------------------------------------
    def grid(self, params: Tensor, out_size: int | tuple[int, int], align_corners: bool = False) -> Tensor:
        """Sampling grid ``(B, H, W, 2)``: for each output pixel, the input point to read.

        ``grid[b, i, j] = T_params[b](base_grid[i, j])``: the output pixel centre,
        normalised (x before y, ``align_corners`` as in ``F.affine_grid``), mapped
        to the input. Feed it to :func:`~stnkit.geometry.sample` (or
        ``F.grid_sample``) with the same ``align_corners``. Finite and within
        ``GRID_LIMIT`` for any finite parameters (degenerate transforms read the
        padding, never NaN); float16 / bfloat16 parameters give a grid made in
        float32 and cast to their dtype (sample it with :func:`~stnkit.geometry.sample`,
        which samples half precision in float32).

        Args:
            params: ``(B, num_params)``.
            out_size: ``(H, W)`` of the output, or an int.
            align_corners: the frame of the grid.

        Example:
            >>> fam = get_transform("affine")
            >>> theta = torch.tensor([[0.5, 0.0, 0.2, 0.0, 0.5, 0.0]])
            >>> ref = torch.nn.functional.affine_grid(theta.view(1, 2, 3), [1, 1, 4, 6], align_corners=False)
            >>> torch.allclose(fam.grid(theta, (4, 6)), ref)
            True
        """
        params = self.check_params(params)
        size = check_size("out_size", out_size)
        if params.dtype in (torch.float16, torch.bfloat16):  # made in float32, clamped to GRID_LIMIT, cast back
            return self._grid(params.float(), size, align_corners).to(params.dtype)
        return self._grid(params, size, align_corners)

    def _grid(self, params: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
        """:meth:`grid` on parameters and a size already validated (the hot path)."""
        raise NotImplementedError

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Map points ``(B, N, 2)`` from output to input coordinates (normalised, x before y).

        The map the grid samples with: ``transform_points(params, base_grid)``
        equals ``grid(params)`` point for point. Returns ``(B, N, 2)``.

        Example:
            >>> fam = get_transform("translation")
            >>> fam.transform_points(torch.tensor([[0.5, -0.25]]), torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]))
            tensor([[[ 0.5000, -0.2500],
                     [ 1.5000,  0.7500]]])
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_params={self.num_params})"


class MatrixFamily(TransformFamily):
    """Families that are 3x3 matrices acting on homogeneous coordinates.

    ``matrix(params)`` is ``(B, 3, 3)`` and maps output to input:
    ``[x_in, y_in, w] = M @ [x_out, y_out, 1]`` in normalised coordinates, then
    ``(x_in, y_in) / w``; ``M[:, :2]`` is ``F.affine_grid``'s theta for the
    affine families. Parameters compose (:meth:`compose`) and invert
    (:meth:`inverse`) through the matrices.

    Example:
        >>> fam = get_transform("attention")
        >>> fam.matrix(torch.tensor([[0.5, 0.1, -0.2]]))
        tensor([[[ 0.5000,  0.0000,  0.1000],
                 [ 0.0000,  0.5000, -0.2000],
                 [ 0.0000,  0.0000,  1.0000]]])
    """

    is_matrix = True
    is_affine = True  # the last row is (0, 0, 1)

    def matrix(self, params: Tensor) -> Tensor:
        """The ``(B, 3, 3)`` matrix mapping output to input (homogeneous, normalised).

        Example:
            >>> get_transform("translation").matrix(torch.tensor([[0.5, 0.0]]))[0, :2]
            tensor([[1.0000, 0.0000, 0.5000],
                    [0.0000, 1.0000, 0.0000]])
        """
        params = self.check_params(params)
        return self._matrix(params)

    def _matrix(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def from_matrix(self, m: Tensor) -> Tensor:
        """Parameters ``(B, num_params)`` of this family from ``(B, 3, 3)`` matrices (which must lie in the family).

        The inverse of :meth:`matrix`; a matrix outside the family is not checked
        and gives the parameters of some nearby member.

        Example:
            >>> fam = get_transform("similarity")
            >>> p = torch.tensor([[0.8, 0.3, 0.1, -0.2]])
            >>> torch.allclose(fam.from_matrix(fam.matrix(p)), p)
            True
        """
        m = check_float_tensor("m", m)
        if m.ndim != 3 or m.shape[-2:] != (3, 3):
            raise ValueError(f"m must have shape (B, 3, 3), got shape {tuple(m.shape)}")
        return self._from_matrix(m)

    def _from_matrix(self, m: Tensor) -> Tensor:
        raise NotImplementedError

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """Parameters of ``T_a o T_b``: points are mapped by ``b`` first, then by ``a``.

        Warping ``x`` by ``a`` and the result by ``b`` equals warping ``x`` once by
        ``compose(a, b)`` (the grids chain from the last warp back to the input).
        ``a``, ``b`` and the result are ``(B, num_params)``; the matrix of the
        result is ``matrix(a) @ matrix(b)``.

        Example:
            >>> fam = get_transform("translation")
            >>> fam.compose(torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 0.25]]))
            tensor([[0.5000, 0.2500]])
        """
        a = self.check_params(a, "a")
        b = self.check_params(b, "b")
        return self._from_matrix(self._matrix(a) @ self._matrix(b))

    def inverse(self, params: Tensor) -> Tensor:
        """Parameters ``(B, num_params)`` of the inverse transform; ``ValueError`` if a matrix is singular.

        ``compose(p, inverse(p))`` is the identity.

        Example:
            >>> get_transform("attention").inverse(torch.tensor([[2.0, 0.5, 0.0]]))
            tensor([[ 0.5000, -0.2500,  0.0000]])
        """
        m = self.matrix(params)
        inv, info = torch.linalg.inv_ex(m)
        # info only flags exactly-zero pivots; a numerically singular matrix
        # (e.g. scale 1e-40 in float32) gives inf/NaN instead
        if not is_tracing() and bool((info != 0).any() or not torch.isfinite(inv).all()):
            raise ValueError(f"params describe a singular {self.name!r} transform that has no inverse")
        return self._from_matrix(inv)

    def _grid(self, params: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
        h, w = size
        theta = self._matrix(params)[:, :2].reshape(-1, 6)
        op = affine_operator((h, w), align_corners, device=params.device, dtype=params.dtype)
        g = (theta @ op).view(-1, h, w, 2)
        # |grid| <= |a| + |b| + |t| on [-1, 1]^2: clamp only when that bound can exceed the limit
        if is_tracing() or 3.0 * float(theta.detach().abs().amax()) > GRID_LIMIT:
            g = finite_grid(g)
        return g

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        params = self.check_params(params)
        points = check_points("points", points)
        _check_batch(params, points, "points")
        m = self._matrix(params).to(points.dtype)
        return _apply_matrix(m, points, affine=self.is_affine)


def _other_dims_hint(family: TransformFamily, params: Tensor) -> str:
    """``"; (B, 12) is the shape of the 3-D 'affine' ..."`` when ``params`` fit the family of the other dimension."""
    other = (TRANSFORMS_3D if family.dims == 2 else TRANSFORMS).get(family.name)
    if other is None or params.ndim < 2 or not other.accepts_shape(tuple(params.shape[1:])):
        return ""
    layout = "(B, C, D, H, W) volume" if other.dims == 3 else "(B, C, H, W) image"
    return (
        f"; that is the shape of the {other.dims}-D {family.name!r}, which warps a {layout}"
        f" (get_transform({family.name!r}, dims={other.dims}))"
    )


def _check_batch(params: Tensor, other: Tensor, name: str) -> None:
    if other.shape[0] != params.shape[0]:
        raise ValueError(f"{name} must have the same batch size as params ({params.shape[0]}), got {other.shape[0]}")


def _safe_denominator(w: Tensor) -> Tensor:
    """Keep w away from zero (points at infinity) with the sign it had."""
    sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))
    return torch.where(w.abs() < _EPS, sign * _EPS, w)


def _apply_matrix(m: Tensor, points: Tensor, affine: bool) -> Tensor:
    out = points @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]
    if affine:
        return out
    w = points @ m[:, 2:, :2].transpose(1, 2) + m[:, None, 2:, 2]
    return out / _safe_denominator(w)


class Translation(MatrixFamily):
    """``tx, ty``: the output pixel at ``p`` reads the input at ``p + t``.

    Normalised units: ``tx = 2 / W`` is one pixel (``align_corners=False``), and
    a positive ``tx`` moves the content to the left.

    Example:
        >>> row = torch.arange(4.0).view(1, 1, 1, 4)
        >>> fam = Translation()
        >>> grid = fam.grid(torch.tensor([[0.5, 0.0]]), (1, 4))
        >>> torch.nn.functional.grid_sample(row, grid, mode="nearest", align_corners=False)
        tensor([[[[1., 2., 3., 0.]]]])
    """

    name = "translation"
    num_params = 2

    def _identity_vector(self):
        return [0.0, 0.0]

    def _random_std(self):
        return [0.2, 0.2]

    def _matrix(self, p):
        one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
        rows = [one, zero, p[:, 0], zero, one, p[:, 1], zero, zero, one]
        return torch.stack(rows, dim=1).view(-1, 3, 3)

    def _from_matrix(self, m):
        return m[:, :2, 2].clone()


class Attention(MatrixFamily):
    """``s, tx, ty``: isotropic scale then translation, ``T(p) = s p + t``.

    The paper's attention transformer: ``s < 1`` zooms in on a window of the
    input centred at ``t``.

    Example:
        >>> fam = Attention()
        >>> fam.transform_points(torch.tensor([[0.5, 0.2, 0.0]]), torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]]))
        tensor([[[-0.3000, -0.5000],
                 [ 0.7000,  0.5000]]])

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, section 3.2.
    """

    name = "attention"
    num_params = 3

    def _identity_vector(self):
        return [1.0, 0.0, 0.0]

    def _random_std(self):
        return [0.15, 0.15, 0.15]

    def _matrix(self, p):
        s, tx, ty = p.unbind(1)
        zero, one = torch.zeros_like(s), torch.ones_like(s)
        return torch.stack([s, zero, tx, zero, s, ty, zero, zero, one], dim=1).view(-1, 3, 3)

    def _from_matrix(self, m):
        s = 0.5 * (m[:, 0, 0] + m[:, 1, 1])
        return torch.stack([s, m[:, 0, 2], m[:, 1, 2]], dim=1)


class Similarity(MatrixFamily):
    """``s, angle, tx, ty``: ``T(p) = s R(angle) p + t`` (rotation-scale-translation).

    ``angle`` is in radians. With y pointing down, a positive angle turns the
    sampling grid clockwise on screen, so the output shows the input's content
    turned counter-clockwise: a quarter turn equals ``torch.rot90(x, 1, dims=(-2, -1))``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> quarter = torch.tensor([[1.0, math.pi / 2, 0.0, 0.0]])
        >>> out = torch.nn.functional.grid_sample(x, Similarity().grid(quarter, (2, 2)), align_corners=False)
        >>> torch.allclose(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6)
        True
    """

    name = "similarity"
    num_params = 4

    def _identity_vector(self):
        return [1.0, 0.0, 0.0, 0.0]

    def _random_std(self):
        return [0.1, 0.4, 0.1, 0.1]

    def bound(self, raw):
        s, a, tx, ty = torch.tanh(raw).unbind(1)
        return torch.stack([1.0 + s, math.pi * a, tx, ty], dim=1)

    def _matrix(self, p):
        s, a, tx, ty = p.unbind(1)
        c, si = s * torch.cos(a), s * torch.sin(a)
        zero, one = torch.zeros_like(s), torch.ones_like(s)
        return torch.stack([c, -si, tx, si, c, ty, zero, zero, one], dim=1).view(-1, 3, 3)

    def _from_matrix(self, m):
        s = torch.hypot(m[:, 0, 0], m[:, 1, 0])
        a = torch.atan2(m[:, 1, 0], m[:, 0, 0])
        return torch.stack([s, a, m[:, 0, 2], m[:, 1, 2]], dim=1)


class Affine(MatrixFamily):
    """The 2x3 matrix ``[[a, b, tx], [c, d, ty]]`` flattened row-major: ``F.affine_grid``'s theta.

    ``(B, 6)``, or ``(B, 2, 3)`` as ``F.affine_grid`` takes it; its grid equals
    ``F.affine_grid(theta.view(B, 2, 3), ...)`` with the same ``align_corners``.

    Example:
        >>> theta = torch.tensor([[[0.8, -0.2, 0.1], [0.3, 0.9, 0.0]]])
        >>> ref = torch.nn.functional.affine_grid(theta, [1, 1, 5, 7], align_corners=True)
        >>> torch.allclose(Affine().grid(theta, (5, 7), align_corners=True), ref, atol=1e-6)
        True

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, section 3.2, eq. (1).
    """

    name = "affine"
    num_params = 6

    def _identity_vector(self):
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    def _random_std(self):
        return [0.15, 0.15, 0.1, 0.15, 0.15, 0.1]

    @classmethod
    def accepts_shape(cls, shape):
        return shape in ((6,), (2, 3))

    def check_params(self, params, name="params"):
        # Accept affine_grid's (B, 2, 3) theta as well as (B, 6).
        if isinstance(params, Tensor) and params.ndim == 3 and params.shape[1:] == (2, 3):
            params = params.reshape(params.shape[0], 6)
        return super().check_params(params, name)

    def _matrix(self, p):
        last = torch.tensor([0.0, 0.0, 1.0], device=p.device, dtype=p.dtype).expand(p.shape[0], 3)
        return torch.cat([p, last], dim=1).view(-1, 3, 3)

    def _from_matrix(self, m):
        return m[:, :2].reshape(-1, 6).clone()


class Projective(MatrixFamily):
    """A homography with ``h33 = 1``: ``T(p) = (H [p; 1])_{xy} / (H [p; 1])_z``.

    ``h = (h11, h12, h13, h21, h22, h23, h31, h32)`` row-major, ``p`` normalised
    (x before y). Output points that ``H`` sends to infinity (``z ~ 0``) read the
    padding. With ``h31 = h32 = 0`` this is the affine family.

    Example:
        >>> h = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0]])
        >>> Projective().transform_points(h, torch.tensor([[[1.0, 1.0]]]))  # z = 0.5 * 1 + 1
        tensor([[[0.6667, 0.6667]]])
    """

    name = "projective"
    num_params = 8
    is_affine = False

    def _identity_vector(self):
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]

    def _random_std(self):
        return [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15]

    def bound(self, raw):
        t = torch.tanh(raw)
        ident = torch.tensor(self._identity_vector(), device=raw.device, dtype=raw.dtype)
        # perspective terms stay small so the horizon stays outside the image
        scale = torch.tensor([1.0] * 6 + [0.5, 0.5], device=raw.device, dtype=raw.dtype)
        return ident + scale * t

    def _matrix(self, p):
        one = torch.ones_like(p[:, :1])
        return torch.cat([p, one], dim=1).view(-1, 3, 3)

    def _from_matrix(self, m):
        m = m / _safe_denominator(m[:, 2:, 2:])
        return m.reshape(-1, 9)[:, :8].clone()

    def _grid(self, params, size, align_corners):
        h, w = size
        m = self._matrix(params)
        dev, dt = params.device, params.dtype
        num = (m[:, :2].reshape(-1, 6) @ affine_operator((h, w), align_corners, device=dev, dtype=dt)).view(
            -1, h * w, 2
        )
        points = cached_operator(
            ("homogeneous", h, w, bool(align_corners), str(dev), dt),
            lambda: homogeneous_points((h, w), align_corners, device=dev, dtype=dt),
        )
        den = m[:, 2] @ points  # (B, H*W)
        if is_tracing() or not _projective_is_tame(m):
            return finite_grid((num / _safe_denominator(den).unsqueeze(-1)).view(-1, h, w, 2))
        # one reciprocal per point, then a product: its backward makes fewer full-size passes than a division's
        return (num * den.reciprocal().unsqueeze(-1)).view(-1, h, w, 2)

    @classmethod
    def from_points(cls, src: Tensor, dst: Tensor) -> Tensor:
        """Parameters of the homography that maps four points ``src`` onto ``dst``.

        Solves the 8x8 linear system of the direct linear transform with
        ``h33 = 1``, so that ``T(src[:, i]) = dst[:, i]`` for ``i = 0..3``. In
        stnkit's convention ``T`` maps **output** to **input** coordinates:
        ``src`` are points of the output frame and ``dst`` the input points they
        read, both normalised to ``[-1, 1]``, x before y (``F.affine_grid``'s
        frame). Warping with the result moves the input's content at ``dst`` to
        ``src``.

        Args:
            src: ``(B, 4, 2)`` floating points, no three of them collinear.
            dst: ``(B, 4, 2)`` their images (the dtypes promote to a common one).

        Returns:
            ``(B, 8)`` parameters ``h11 h12 h13 h21 h22 h23 h31 h32`` of the
            ``projective`` family, differentiable in ``src`` and ``dst``.

        Raises:
            TypeError: ``src`` or ``dst`` is not a floating tensor.
            ValueError: a shape is not ``(B, 4, 2)``, the shapes differ, a value is
                not finite, or the points are degenerate (the system is singular).

        Example:
            >>> square = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
            >>> params = Projective.from_points(square, 0.5 * square + 0.25)
            >>> affine = torch.tensor([[0.5, 0.0, 0.25, 0.0, 0.5, 0.25, 0.0, 0.0]])  # T(p) = p / 2 + 1 / 4
            >>> torch.allclose(params, affine, atol=1e-6)
            True
            >>> torch.allclose(get_transform("projective").transform_points(params, square), 0.5 * square + 0.25)
            True

        References:
            R. Hartley and A. Zisserman, *Multiple View Geometry in Computer
            Vision*, 2nd ed., 2004, section 4.1 (the direct linear transform).
        """
        src = check_points("src", src)
        dst = check_points("dst", dst)
        if src.shape[1] != 4:
            raise ValueError(f"src must have shape (B, 4, 2), four points per sample, got shape {tuple(src.shape)}")
        if dst.shape != src.shape:
            raise ValueError(f"dst must have the shape of src {tuple(src.shape)}, got shape {tuple(dst.shape)}")
        check_finite("src", src)
        check_finite("dst", dst)
        dtype = torch.promote_types(src.dtype, dst.dtype)
        src, dst = src.to(dtype), dst.to(dtype)
        x, y = src[..., 0], src[..., 1]
        xt, yt = dst[..., 0], dst[..., 1]
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rows_x = torch.stack([x, y, one, zero, zero, zero, -x * xt, -y * xt], dim=-1)
        rows_y = torch.stack([zero, zero, zero, x, y, one, -x * yt, -y * yt], dim=-1)
        a = torch.cat([rows_x, rows_y], dim=1)  # (B, 8, 8)
        b = torch.cat([xt, yt], dim=1)  # (B, 8)
        return _solve("src and dst", a, b, "must be four points with no three collinear, got a singular system")

    @classmethod
    def from_pixel_points(
        cls,
        src: Tensor,
        dst: Tensor,
        out_size: int | tuple[int, int],
        in_size: int | tuple[int, int] | None = None,
        align_corners: bool = False,
    ) -> Tensor:
        """:meth:`from_points` for points in pixels: the homography whose warp, of an ``in_size``
        image to an ``out_size`` one, moves the input's pixel ``dst[:, i]`` to the output's ``src[:, i]``.

        Pixel coordinates are OpenCV's (the centre of pixel (row i, column j) is ``(x=j, y=i)``,
        :func:`~stnkit.geometry.normalization_matrix`); ``src`` lie in the output frame
        (``out_size``), ``dst`` in the input frame (``in_size``, default ``out_size``). With
        ``src`` the corners of a patch and ``dst`` the corners moved by offsets, this is the
        four-point parameterisation of deep homography estimation (DeTone et al. 2016).

        Example:
            >>> src = torch.tensor([[[0.0, 0.0], [7.0, 0.0], [7.0, 7.0], [0.0, 7.0]]])
            >>> params = Projective.from_pixel_points(src, src + 2.0, out_size=8)  # read 2 px right and down
            >>> torch.allclose(params, torch.tensor([[1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 0.0]]), atol=1e-6)
            True
        """
        src = check_points("src", src)
        dst = check_points("dst", dst)
        out_size = check_size("out_size", out_size)
        in_size = out_size if in_size is None else check_size("in_size", in_size)
        dtype = torch.promote_types(src.dtype, dst.dtype)
        n_out = normalization_matrix(out_size, align_corners, device=src.device, dtype=dtype)
        n_in = normalization_matrix(in_size, align_corners, device=src.device, dtype=dtype)
        return cls.from_points(_affine_points(n_out, src.to(dtype)), _affine_points(n_in, dst.to(dtype)))


def _affine_points(n: Tensor, points: Tensor) -> Tensor:
    """``points`` ``(B, N, 2)`` mapped by the affine ``(3, 3)`` matrix ``n``."""
    return points @ n[:2, :2].T + n[:2, 2]


def _projective_is_tame(m: Tensor) -> bool:
    """True when no point of ``[-1, 1]^2`` goes near infinity and the grid stays within ``GRID_LIMIT``.

    The denominator ``w = g x + h y + 1`` is affine, so on the square it is at least
    ``1 - |g| - |h|``; the numerator is at most ``|a| + |b| + |t|``.
    """
    m = m.detach()
    margin = 1.0 - (m[:, 2, 0].abs() + m[:, 2, 1].abs())
    top = m[:, :2].abs().sum(-1).amax(-1)
    worst = torch.stack([margin.amin(), (top / margin.clamp_min(_TAME_MARGIN)).amax()]).tolist()
    return worst[0] >= _TAME_MARGIN and worst[1] <= GRID_LIMIT


def _tps_kernel(r2: Tensor) -> Tensor:
    """U(r) = r^2 log r^2, with U(0) = 0 and a finite gradient there."""
    return r2 * torch.log(r2.clamp_min(1e-20))


class ThinPlateSpline(TransformFamily):
    """Thin-plate spline on a ``k x k`` grid of control points spanning ``[-1, 1]^2``.

    Parameters are the ``(x, y)`` offsets of the control points, flattened as
    ``(B, k*k*2)`` with x before y and points in row-major order (y outer, x
    inner); zero offsets are the identity. The control point ``c_i`` of the
    output maps to ``c_i + d_i`` in the input, and the spline interpolates in
    between (``reg > 0`` smooths it instead of interpolating exactly). Affine
    maps are reproduced exactly.

    The spline's linear system depends only on the control points, so its
    inverse is computed once; for each output size the grid weights are cached,
    and a batch then costs one matrix product. :meth:`inverse_grid` inverts the
    spline (Newton), :meth:`jacobian_det` and :meth:`folds` tell where it is not
    locally invertible.

    Args:
        grid_size: ``k``, the control points per side (at least 2).
        reg: ``>= 0``; added to the kernel's diagonal (0: exact interpolation).

    Example:
        >>> fam = ThinPlateSpline(grid_size=3)
        >>> fam.num_params, fam.control_points.shape
        (18, torch.Size([9, 2]))
        >>> offsets = torch.zeros(1, 18)
        >>> offsets[0, 8:10] = torch.tensor([0.1, -0.2])  # move the centre control point
        >>> fam.transform_points(offsets, torch.tensor([[[0.0, 0.0]]]))
        tensor([[[ 0.1000, -0.2000]]])

    References:
        F. L. Bookstein, "Principal warps: thin-plate splines and the
        decomposition of deformations", IEEE TPAMI 11(6), 1989.

        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, section 3.2.
    """

    name = "tps"

    def __init__(self, grid_size: int = 4, reg: float = 0.0):
        check_int("grid_size", grid_size, low=2)
        if not math.isfinite(reg) or reg < 0:
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        self.grid_size = grid_size
        self.reg = float(reg)
        self.num_params = 2 * grid_size * grid_size
        c = torch.linspace(-1.0, 1.0, grid_size, dtype=torch.float64)
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        self.control_points = torch.stack([cx, cy], dim=-1).reshape(-1, 2)  # (K, 2)
        k = self.control_points.shape[0]
        # L = [[K + reg I, P], [P^T, 0]] with P = [1, x, y]
        r2 = torch.cdist(self.control_points, self.control_points).pow(2)
        p = torch.cat([torch.ones(k, 1, dtype=torch.float64), self.control_points], dim=1)
        top = torch.cat([_tps_kernel(r2) + self.reg * torch.eye(k, dtype=torch.float64), p], dim=1)
        bottom = torch.cat([p.T, torch.zeros(3, 3, dtype=torch.float64)], dim=1)
        self._l_inv = torch.linalg.inv(torch.cat([top, bottom], dim=0))[:, :k]  # (K+3, K)
        self._grid_cache: dict = {}

    def __repr__(self):
        return f"ThinPlateSpline(grid_size={self.grid_size}, reg={self.reg})"

    def _identity_vector(self):
        return [0.0] * self.num_params

    def _random_std(self):
        return [0.3 / (self.grid_size - 1)] * self.num_params

    def weights(self, points: Tensor) -> Tensor:
        """Weights ``(..., N, K)`` with ``T(points) = weights @ targets`` (targets = control points + offsets).

        ``points`` is ``(..., N, 2)``, normalised, x before y; each row of weights sums to 1.

        Example:
            >>> fam = ThinPlateSpline(grid_size=2)
            >>> w = fam.weights(fam.control_points)  # each control point is its own target
            >>> torch.allclose(w, torch.eye(4, dtype=torch.float64))
            True
        """
        c = self.control_points.to(device=points.device, dtype=points.dtype)
        l_inv = self._l_inv.to(device=points.device, dtype=points.dtype)
        r2 = (points.unsqueeze(-2) - c).pow(2).sum(-1)  # (..., N, K)
        ones = torch.ones_like(points[..., :1])
        basis = torch.cat([_tps_kernel(r2), ones, points], dim=-1)  # (..., N, K+3)
        return basis @ l_inv

    def weight_gradients(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``d weights / dx`` and ``d weights / dy``, each ``(..., N, K)``: the spline's Jacobian
        at ``points`` is ``[wx @ targets, wy @ targets]`` (columns dT/dx, dT/dy).

        Example:
            >>> fam = ThinPlateSpline(grid_size=3)
            >>> pts = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
            >>> wx, wy = fam.weight_gradients(pts)
            >>> targets = fam.control_points  # zero offsets: the identity, whose Jacobian is I
            >>> torch.allclose(torch.stack([wx @ targets, wy @ targets], -1), torch.eye(2, dtype=torch.float64))
            True
        """
        c = self.control_points.to(device=points.device, dtype=points.dtype)
        l_inv = self._l_inv.to(device=points.device, dtype=points.dtype)
        d = points.unsqueeze(-2) - c  # (..., N, K, 2)
        r2 = d.pow(2).sum(-1)
        # d(r^2 log r^2)/du = 2 (log r^2 + 1) (u - c), zero at the control point itself
        g = torch.where(r2 > 0, 2.0 * (torch.log(r2.clamp_min(1e-300)) + 1.0), torch.zeros_like(r2))
        zeros, ones = torch.zeros_like(points[..., :1]), torch.ones_like(points[..., :1])
        bx = torch.cat([g * d[..., 0], zeros, ones, zeros], dim=-1)
        by = torch.cat([g * d[..., 1], zeros, zeros, ones], dim=-1)
        return bx @ l_inv, by @ l_inv

    def grid_weights(
        self,
        out_size: int | tuple[int, int],
        align_corners: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The cached identity grid ``(H*W, 2)`` and weights ``(H*W, K)`` for an output size.

        Computed once in float64. Since the spline reproduces affine maps, the
        grid is ``identity + weights @ offsets``, which keeps the identity exact.

        Example:
            >>> ident, w = ThinPlateSpline(grid_size=3).grid_weights((4, 5))
            >>> ident.shape, w.shape
            (torch.Size([20, 2]), torch.Size([20, 9]))
        """
        ident, weights, _, _ = self._grid_operator(out_size, align_corners, device=device, dtype=dtype)
        return ident, weights

    def _grid_operator(
        self,
        out_size: int | tuple[int, int],
        align_corners: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        """``(ident, weights, operator, reach)``: the grid is ``ident + params @ operator`` (one
        matrix product, :func:`~stnkit.geometry.coords.interleave_xy`), and no point moves
        further than ``reach * max|params|`` from the identity."""
        h, w = check_size("out_size", out_size)
        dtype = dtype or torch.get_default_dtype()
        key = (h, w, bool(align_corners), str(device), dtype)
        cached = self._grid_cache.get(key)
        if cached is None:
            pts = base_grid((h, w), align_corners, dtype=torch.float64).view(-1, 2)
            weights = self.weights(pts)
            op = interleave_xy(weights.T, params_outer=False)
            reach = weights.abs().sum(-1).max()
            cached = tuple(t.to(device=device, dtype=dtype) for t in (pts, weights, op, reach))
            # tensors made while exporting/compiling may be FakeTensors: caching them
            # would poison every later eager call
            if not is_tracing():
                self._grid_cache[key] = cached
        return cached

    def coefficients(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The spline ``T(u) = sum_i w_i U(|u - c_i|) + a_0 + a_xy u``: kernel weights
        ``(B, K, 2)`` and affine part ``(B, 3, 2)`` (rows 1, x, y), from the precomputed inverse.

        ``U(r) = r^2 log r^2`` (Bookstein's kernel up to a factor of 2).

        Example:
            >>> w, a = ThinPlateSpline(grid_size=3).coefficients(torch.zeros(1, 18, dtype=torch.float64))
            >>> w.shape, a.shape
            (torch.Size([1, 9, 2]), torch.Size([1, 3, 2]))
            >>> ident = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
            >>> bool(w.abs().max() < 1e-12), torch.allclose(a[0], ident)  # the identity: no bending, affine part [0, I]
            (True, True)
        """
        params = self.check_params(params)
        coef = self._l_inv.to(device=params.device, dtype=params.dtype) @ self.targets(params)
        k = self.control_points.shape[0]
        return coef[:, :k], coef[:, k:]

    def targets(self, params: Tensor) -> Tensor:
        """Where the control points map in the input: ``(B, K, 2)``, control points plus offsets.

        Example:
            >>> ThinPlateSpline(grid_size=2).targets(torch.zeros(1, 8))
            tensor([[[-1., -1.],
                     [ 1., -1.],
                     [-1.,  1.],
                     [ 1.,  1.]]])
        """
        c = self.control_points.to(device=params.device, dtype=params.dtype)
        return c + params.view(params.shape[0], -1, 2)

    def _grid(self, params, size, align_corners):
        h, w = size
        ident, _, op, reach = self._grid_operator((h, w), align_corners, device=params.device, dtype=params.dtype)
        g = torch.addmm(ident.view(-1), params, op).view(-1, h, w, 2)
        # |grid| <= 1 + reach * max|offset|: clamp only when that can exceed the limit
        if is_tracing() or 1.0 + float(reach) * float(params.detach().abs().amax()) > GRID_LIMIT:
            g = finite_grid(g)
        return g

    def transform_points(self, params, points):
        params = self.check_params(params)
        points = check_points("points", points)
        _check_batch(params, points, "points")
        return self.weights(points) @ self.targets(params).to(points.dtype)

    # -- the spline's inverse and its Jacobian ------------------------------------------
    def inverse_grid(
        self, params: Tensor, out_size: int | tuple[int, int], align_corners: bool = False, *, iters: int = 7
    ) -> Tensor:
        """Sampling grid ``(B, H, W, 2)`` of the inverse spline, solved by Newton's method.

        The spline ``T`` maps output points to input points (stnkit's
        convention, as :meth:`grid`). This returns, for each pixel ``v`` of an
        ``out_size`` frame in the *input*'s normalised coordinates (x before y,
        ``F.affine_grid``'s frame), the output point ``u`` with ``T(u) = v``. So
        ``sample(warp(x, params, tps), inverse_grid(params, x's size))`` brings a
        warped image back onto ``x``'s frame (up to resampling blur and what
        left the canvas). A thin-plate spline has no closed-form inverse.

        Newton starts from the inverse of the spline's affine part and takes
        ``iters`` steps in float64 (each clamped to 0.5); for splines that do not
        fold (:meth:`folds`), with offsets of a few pixels, the residual
        ``|T(u) - v|`` is ~1e-6 or less after the default 7 steps. Where the
        spline folds, the inverse is not unique and the result is one of them,
        or no solution.

        Args:
            params: ``(B, num_params)`` control-point offsets.
            out_size: ``(H, W)`` or an int, the frame of the points ``v``.
            align_corners: the frame's convention, see :mod:`stnkit.geometry.coords`.
            iters: Newton steps (an int >= 1).

        Returns:
            ``(B, H, W, 2)`` in the dtype and on the device of ``params``;
            differentiable in ``params`` (through the unrolled steps).

        Example:
            >>> tps = ThinPlateSpline(grid_size=3)
            >>> params = 0.05 * torch.randn(2, 18, generator=torch.Generator().manual_seed(0))
            >>> u = tps.inverse_grid(params, (5, 6))
            >>> u.shape
            torch.Size([2, 5, 6, 2])
            >>> v = base_grid((5, 6)).expand(2, -1, -1, -1)
            >>> bool((tps.transform_points(params, u.reshape(2, -1, 2)) - v.reshape(2, -1, 2)).abs().max() < 1e-5)
            True
        """
        params = self.check_params(params)
        h, w = check_size("out_size", out_size)
        check_int("iters", iters)
        parts = [self._newton_inverse(p, (h, w), align_corners, iters) for p in params.split(_INVERSE_CHUNK)]
        return torch.cat(parts).to(params.dtype)

    def _newton_inverse(self, params: Tensor, size: tuple[int, int], align_corners: bool, iters: int) -> Tensor:
        n, (h, w) = params.shape[0], size
        params = params.double()
        tgt = self.targets(params)  # (N, K, 2)
        v = base_grid((h, w), align_corners, device=params.device, dtype=torch.float64).view(1, -1, 2)
        v = v.expand(n, -1, -1)
        # start from the inverse of the spline's affine part: T(u) ~ a0 + A u
        _, a = self.coefficients(params)  # (N, 3, 2), rows 1, x, y
        lin = a[:, 1:].transpose(1, 2)  # (N, 2, 2)
        u = torch.linalg.solve(lin, (v - a[:, None, 0]).transpose(1, 2)).transpose(1, 2)
        for _ in range(iters):
            t = self.weights(u) @ tgt
            wx, wy = self.weight_gradients(u)
            jx, jy = wx @ tgt, wy @ tgt
            # solve J step = T(u) - v by Cramer's rule (J has columns dT/dx, dT/dy)
            r = t - v
            det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
            det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
            sx = (r[..., 0] * jy[..., 1] - jy[..., 0] * r[..., 1]) / det
            sy = (jx[..., 0] * r[..., 1] - r[..., 0] * jx[..., 1]) / det
            u = u - torch.stack([sx, sy], dim=-1).clamp(-0.5, 0.5)
        return u.view(n, h, w, 2)

    def jacobian_det(self, params: Tensor, out_size: int | tuple[int, int], align_corners: bool = False) -> Tensor:
        """Determinant of the spline's Jacobian ``dT/du`` at the pixel centres of an output frame.

        ``T`` maps output to input coordinates (both normalised to ``[-1, 1]``,
        x before y); the Jacobian ``[dT/dx, dT/dy]`` is exact (the kernel's
        derivative ``2 (log r^2 + 1) (u - c)``, not finite differences). A
        determinant ``<= 0`` somewhere means the spline folds or mirrors the
        image there (:meth:`folds`). The derivative weights of each frame are
        computed once in float64 and cached per size, ``align_corners``,
        device and dtype.

        Args:
            params: ``(B, num_params)`` control-point offsets.
            out_size: ``(H, W)`` or an int, the output frame whose pixel centres are used.
            align_corners: the frame's convention, see :mod:`stnkit.geometry.coords`.

        Returns:
            ``(B, H, W)`` in the dtype and on the device of ``params``
            (differentiable in ``params``); 1 everywhere for the identity.

        Example:
            >>> tps = ThinPlateSpline(grid_size=3)
            >>> det = tps.jacobian_det(tps.identity(2), (3, 4))
            >>> det.shape, torch.allclose(det, torch.ones(2, 3, 4))
            (torch.Size([2, 3, 4]), True)
            >>> shrink = tps.control_points.float().view(1, 18) * -0.5  # T(u) = u / 2: det 1/4
            >>> torch.allclose(tps.jacobian_det(shrink, 4), torch.full((1, 4, 4), 0.25), atol=1e-5)
            True

        References:
            Bookstein 1989 (see :class:`ThinPlateSpline`).
        """
        params = self.check_params(params)
        h, w = check_size("out_size", out_size)
        return self._jacobian_det(params, (h, w), align_corners).view(-1, h, w)

    def _jacobian_det(self, params: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
        """``(B, H*W)`` determinants on validated arguments."""
        h, w = size
        key = ("jacobian", h, w, bool(align_corners), str(params.device), params.dtype)
        cached = self._grid_cache.get(key)
        if cached is None:
            pts = base_grid((h, w), align_corners, dtype=torch.float64).view(-1, 2)
            cached = tuple(g.to(device=params.device, dtype=params.dtype) for g in self.weight_gradients(pts))
            if not is_tracing():
                self._grid_cache[key] = cached
        dwx, dwy = cached  # (H*W, K) each
        tgt = self.targets(params)  # (B, K, 2)
        jx, jy = dwx @ tgt, dwy @ tgt  # (B, H*W, 2): dT/dx, dT/dy
        return jx[..., 0] * jy[..., 1] - jx[..., 1] * jy[..., 0]

    def folds(self, params: Tensor, out_size: int | tuple[int, int], align_corners: bool = False) -> Tensor:
        """``(B,)`` bool: True where the spline folds an output frame onto itself.

        A fold is a pixel centre of the ``out_size`` frame where the Jacobian
        determinant (:meth:`jacobian_det`) is ``<= 0``: there the spline is not
        locally invertible (it folds or mirrors the image) and
        :meth:`inverse_grid` is not unique. Checked in chunks of 2048 samples.

        Args:
            params: ``(B, num_params)`` control-point offsets.
            out_size: ``(H, W)`` or an int, the output frame.
            align_corners: the frame's convention, see :mod:`stnkit.geometry.coords`.

        Returns:
            ``(B,)`` bool on the device of ``params``.

        Example:
            >>> tps = ThinPlateSpline(grid_size=4)
            >>> params = torch.zeros(2, 32)
            >>> params[1, 10] = 1.2  # push an inner control point (index 5) past its right neighbour
            >>> tps.folds(params, (28, 28))
            tensor([False,  True])

        References:
            Bookstein 1989 (see :class:`ThinPlateSpline`).
        """
        params = self.check_params(params)
        size = check_size("out_size", out_size)
        parts = [(self._jacobian_det(p, size, align_corners) <= 0).any(dim=1) for p in params.split(_FOLD_CHUNK)]
        return torch.cat(parts)


# name -> family class, in the order of the table above
TRANSFORMS: dict[str, type[TransformFamily]] = {
    cls.name: cls for cls in (Translation, Attention, Similarity, Affine, Projective, ThinPlateSpline)
}
# name -> 3-D family class: filled by stnkit.geometry.families3d (imported with stnkit.geometry)
TRANSFORMS_3D: dict[str, type[TransformFamily]] = {}
# name -> dense field "family" (2-D and 3-D, a dims argument): filled by stnkit.geometry.dense
FIELD_TRANSFORMS: dict[str, type[TransformFamily]] = {}


@lru_cache(maxsize=64)
def _cached_family(name: str, options: tuple, dims: int = 2) -> TransformFamily:
    if name in FIELD_TRANSFORMS:
        return FIELD_TRANSFORMS[name](dims=dims, **dict(options))
    return (TRANSFORMS if dims == 2 else TRANSFORMS_3D)[name](**dict(options))


def get_transform(transform: str | TransformFamily, dims: int | None = None, **options) -> TransformFamily:
    """Look a transform family up by name (``"affine"``, ``"tps"``, ...) or pass one through.

    Options go to the family's constructor (``get_transform("tps", grid_size=3)``).
    Instances are cached, so the TPS precomputation is shared between calls.

    ``dims=3`` gives the 3-D family of that name (:data:`TRANSFORMS_3D`, see
    :mod:`stnkit.geometry.families3d`: ``get_transform("affine", dims=3)`` is the
    12-parameter :class:`~stnkit.geometry.Affine3D`, for volumes ``(B, C, D, H, W)``);
    ``None`` (the default) means 2-D for a name and leaves a ``TransformFamily`` as it is.

    ``"dense"`` and ``"velocity"`` (:data:`FIELD_TRANSFORMS`, see :mod:`stnkit.geometry.dense`)
    exist in both dimensions: their parameters are a displacement or velocity field
    ``(B, dims, *spatial)`` (``get_transform("velocity", dims=3, steps=7)``).

    Args:
        transform: a name of :data:`TRANSFORMS` (or of :data:`TRANSFORMS_3D` with
            ``dims=3``) or a ``TransformFamily`` (returned as is).
        dims: ``2``, ``3`` or ``None``; with a ``TransformFamily``, it must be the family's ``dims``.
        **options: the family's constructor arguments, with a name only.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), options
            with a ``TransformFamily``, or ``dims`` that is not the family's.
        TypeError: ``transform`` of another type, or options the family does not take.

    Example:
        >>> get_transform("tps", grid_size=3)
        ThinPlateSpline(grid_size=3, reg=0.0)
        >>> get_transform("tps", grid_size=3) is get_transform("tps", grid_size=3)
        True
        >>> get_transform("affine").num_params
        6
    """
    if dims is not None and (isinstance(dims, bool) or dims not in (2, 3)):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    if isinstance(transform, TransformFamily):
        if options:
            raise ValueError("options can only be given with a transform name, not a TransformFamily")
        if dims is not None and transform.dims != dims:
            raise ValueError(
                f"transform {transform!r} is a {transform.dims}-D family, but dims={dims} was asked for"
                f" (get_transform({transform.name!r}, dims={dims}) gives the {dims}-D one)"
            )
        return transform
    if not isinstance(transform, str):
        raise TypeError(f"transform must be a name or a TransformFamily, got {type(transform).__name__}")
    dims = 2 if dims is None else dims
    table, other = (TRANSFORMS, TRANSFORMS_3D) if dims == 2 else (TRANSFORMS_3D, TRANSFORMS)
    if transform not in table and transform not in FIELD_TRANSFORMS:
        where = "" if dims == 2 else " in 3-D"
        hint = f" ({transform!r} is a {5 - dims}-D family)" if transform in other else ""
        names = ", ".join([*table, *FIELD_TRANSFORMS])
        raise ValueError(f"unknown transform {transform!r}{where}; valid names: {names}{hint}")
    try:
        return _cached_family(transform, tuple(sorted(options.items())), dims)
    except TypeError as err:
        raise TypeError(f"invalid options for transform {transform!r}: {err}") from None


__all__ = [
    "FIELD_TRANSFORMS",
    "TRANSFORMS",
    "TRANSFORMS_3D",
    "Affine",
    "Attention",
    "MatrixFamily",
    "Projective",
    "Similarity",
    "ThinPlateSpline",
    "TransformFamily",
    "Translation",
    "get_transform",
]
