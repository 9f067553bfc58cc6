"""Dense field "families": a displacement or velocity field as the transform's parameters.

``get_transform("dense")`` and ``get_transform("velocity", dims=3, steps=7)``
give objects with the interface of a transform family (``name``, ``dims``,
``identity``, ``check_params``, ``grid``) whose parameters are a whole field
instead of a vector, in the convention of :mod:`stnkit.geometry.fields`:

* ``params`` is ``(B, 2, H, W)`` (``dims=2``) or ``(B, 3, D, H, W)`` (``dims=3``),
  channel ``k`` the displacement (or velocity) along ``(x, y[, z])`` =
  ``(W, H[, D])``, normalised as in ``F.affine_grid`` (``align_corners`` as given).
* ``dense``: output point ``p`` reads the input at ``p + u(p)``:
  :func:`~stnkit.geometry.warp_field`.
* ``velocity``: the stationary velocity field ``v`` is integrated by scaling and
  squaring (:func:`~stnkit.geometry.integrate_velocity`, ``steps`` squarings,
  default 7, ``border`` padding) into the displacement ``u = exp(v)``, then
  warped as ``dense``.
* **The field's spatial size is the output's size.** It may differ from the
  input's (the frame is normalised, so a field on a 4 x 4 grid warps an 8 x 8
  image into a 4 x 4 output). ``warp(..., out_size=...)`` must be ``None`` or
  that size; to change it, resize the field first (``F.interpolate`` with the same
  ``align_corners``: normalised displacements need no rescaling).

Example:
    >>> import torch
    >>> from stnkit.geometry import get_transform, warp
    >>> fam = get_transform("velocity", dims=3, steps=4)
    >>> fam
    VelocityField(dims=3, steps=4)
    >>> v = fam.identity(2, (4, 5, 6))  # the zero field
    >>> v.shape
    torch.Size([2, 3, 4, 5, 6])
    >>> x = torch.rand(2, 1, 4, 5, 6)
    >>> torch.allclose(warp(x, v, fam), x, atol=1e-6)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_finite, check_float_tensor, check_int, check_size, check_size_3d
from .families import FIELD_TRANSFORMS, TransformFamily, get_transform  # noqa: F401 (doctests)
from .fields import field_grid, integrate_velocity


class FieldFamily(TransformFamily):
    """Base of ``dense`` and ``velocity``: parameters are a field ``(B, dims, *spatial)``, not a vector.

    ``num_params`` is ``None`` (the number of values depends on the field's size);
    :meth:`identity` takes the field's spatial size.

    Example:
        >>> fam = get_transform("dense", dims=3)
        >>> fam.grid(fam.identity(1, (2, 3, 4))).shape
        torch.Size([1, 2, 3, 4, 3])
    """

    is_field = True
    num_params = None  # type: ignore[assignment]

    def __init__(self, dims: int = 2):
        if isinstance(dims, bool) or dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        self.dims = dims

    def _layout(self) -> str:
        return "(B, 2, H, W)" if self.dims == 2 else "(B, 3, D, H, W)"

    def identity(  # type: ignore[override]
        self,
        batch_size: int,
        size: int | tuple[int, int] | tuple[int, int, int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """The zero field ``(batch_size, dims, *size)``: the identity warp.

        Example:
            >>> get_transform("dense").identity(2, (3, 4)).shape
            torch.Size([2, 2, 3, 4])
        """
        check_int("batch_size", batch_size)
        size = (check_size if self.dims == 2 else check_size_3d)("size", size)
        return torch.zeros(batch_size, self.dims, *size, device=device, dtype=dtype or torch.get_default_dtype())

    def check_params(self, params: object, name: str = "params") -> Tensor:
        """Validate a field ``(B, dims, *spatial)`` (floating, finite, non-empty); returns it unchanged.

        Example:
            >>> get_transform("dense").check_params(torch.zeros(1, 3, 4, 4, 4))
            Traceback (most recent call last):
            ...
            ValueError: params for the 2-D 'dense' transform must be a field of shape (B, 2, H, W), got shape (1, 3, 4, 4, 4); that is a 3-D field, for a (B, C, D, H, W) volume (get_transform('dense', dims=3))
        """
        params = check_float_tensor(name, params)
        if params.ndim != self.dims + 2 or params.shape[1] != self.dims:
            other = 5 - self.dims
            hint = ""
            if params.ndim == other + 2 and params.shape[1] == other:
                layout = "(B, C, D, H, W) volume" if other == 3 else "(B, C, H, W) image"
                hint = f"; that is a {other}-D field, for a {layout} (get_transform({self.name!r}, dims={other}))"
            raise ValueError(
                f"{name} for the {self.dims}-D {self.name!r} transform must be a field of shape {self._layout()}, "
                f"got shape {tuple(params.shape)}{hint}"
            )
        if any(s == 0 for s in params.shape):
            raise ValueError(f"{name} must be non-empty in every dimension, got shape {tuple(params.shape)}")
        check_finite(name, params)
        return params

    @classmethod
    def accepts_shape(cls, shape: tuple[int, ...]) -> bool:
        return len(shape) in (3, 4) and shape[0] == len(shape) - 1

    def displacement(self, params: Tensor, align_corners: bool = False) -> Tensor:
        """The displacement field ``u`` (``params``'s shape) that the warp samples with.

        Example:
            >>> v = torch.full((1, 2, 4, 4), 0.25)  # a constant velocity integrates to the translation
            >>> torch.allclose(get_transform("velocity").displacement(v), v)
            True
        """
        return self._displacement(self.check_params(params), align_corners)

    def _displacement(self, params: Tensor, align_corners: bool) -> Tensor:
        raise NotImplementedError

    def check_out_size(
        self, params: Tensor, out_size: int | tuple[int, int] | tuple[int, int, int] | None
    ) -> tuple[int, ...]:
        """The output size: the field's spatial size; ``out_size`` must be ``None`` or equal to it."""
        size = tuple(int(s) for s in params.shape[2:])
        if out_size is not None:
            want = (check_size if self.dims == 2 else check_size_3d)("out_size", out_size)
            if want != size:
                raise ValueError(
                    f"out_size must be None or the field's spatial size {size} for the {self.name!r} transform "
                    f"(the field sets the output size; resize the field to change it), got {want}"
                )
        return size

    def grid(  # type: ignore[override]
        self,
        params: Tensor,
        out_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
        align_corners: bool = False,
    ) -> Tensor:
        """Sampling grid ``(B, *spatial, dims)``: identity plus the displacement (channels last).

        ``out_size`` is ``None`` or the field's spatial size (see the module docstring).
        """
        params = self.check_params(params)
        size = self.check_out_size(params, out_size)
        return self._grid(params, size, align_corners)

    def _grid(self, params: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        return field_grid(self._displacement(params, align_corners), align_corners)

    def bound(self, raw: Tensor) -> Tensor:
        """Not defined for fields: ``NotImplementedError``."""
        raise NotImplementedError(f"the {self.name!r} transform has no bounded form")

    def random(self, *args, **kwargs) -> Tensor:
        """Not defined for fields: ``NotImplementedError``."""
        raise NotImplementedError(f"the {self.name!r} transform has no random parameters")

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Not defined for fields (the warp maps its own grid only): ``NotImplementedError``."""
        raise NotImplementedError(f"the {self.name!r} transform maps its grid only (sample the field for points)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dims={self.dims})"


class DenseField(FieldFamily):
    """``dense``: a displacement field; output point ``p`` reads ``p + u(p)`` (:func:`~stnkit.geometry.warp_field`).

    Example:
        >>> from stnkit.geometry import warp
        >>> row = torch.arange(4.0).view(1, 1, 1, 4)
        >>> u = torch.zeros(1, 2, 1, 4)
        >>> u[:, 0] = 0.5  # read one pixel (2/4) to the right
        >>> warp(row, u, "dense", mode="nearest")
        tensor([[[[1., 2., 3., 0.]]]])
    """

    name = "dense"

    def _displacement(self, params, align_corners):
        return params


class VelocityField(FieldFamily):
    """``velocity``: a stationary velocity field, integrated by scaling and squaring, then warped as ``dense``.

    Args:
        dims: 2 or 3.
        steps: squarings of :func:`~stnkit.geometry.integrate_velocity` (``>= 0``, default 7).

    Example:
        >>> from stnkit.geometry import integrate_velocity, warp, warp_field
        >>> x, v = torch.rand(1, 1, 4, 4, 4), 0.1 * torch.randn(1, 3, 4, 4, 4)
        >>> torch.equal(warp(x, v, "velocity"), warp_field(x, integrate_velocity(v, steps=7)))
        True
    """

    name = "velocity"

    def __init__(self, dims: int = 2, steps: int = 7):
        super().__init__(dims)
        self.steps = check_int("steps", steps, low=0)

    def _displacement(self, params, align_corners):
        return integrate_velocity(params, self.steps, align_corners)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dims={self.dims}, steps={self.steps})"


FIELD_TRANSFORMS["dense"] = DenseField
FIELD_TRANSFORMS["velocity"] = VelocityField


__all__ = ["DenseField", "FieldFamily", "VelocityField"]
