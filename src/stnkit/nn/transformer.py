"""Spatial transformer modules built on :mod:`stnkit.geometry`.

Every module follows the geometry's convention: the predicted parameters map
**output** points to **input** points, normalised to ``[-1, 1]``, x before y
(as ``F.affine_grid``), with the ``align_corners`` given at construction.

References:
    M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial
    Transformer Networks", NeurIPS 2015 (arXiv:1506.02025).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_image, check_image_or_volume, check_int, check_size, check_size_3d
from ..geometry import MODES, PADDING_MODES, TransformFamily, get_transform
from ..geometry.warp import compose_grid, sample


class IdentityHead(nn.Linear):
    """The localisation net's last layer: zero weights, bias = identity parameters.

    The transformer therefore starts as the identity, whatever the features are
    (the paper's initialisation, and the usual cure for transformers that
    collapse early in training).

    Args:
        in_features: the size of the features ``(B, in_features)``.
        family: the transform family; the output is ``(B, family.num_params)``.
        bounded: the output goes through ``family.bound`` afterwards, whose
            identity is at zero, so the bias is zero.
        field_size: for a field family (``dense``, ``velocity``): the spatial size of
            the predicted field; the output is then ``(B, dims * prod(field_size))``,
            all zero at initialisation (the zero field is the identity).

    Example:
        >>> head = IdentityHead(5, get_transform("affine"))
        >>> with torch.no_grad():
        ...     torch.equal(head(torch.randn(2, 5)), get_transform("affine").identity(2))
        True
    """

    def __init__(
        self,
        in_features: int,
        family: TransformFamily,
        bounded: bool = False,
        field_size: tuple[int, ...] | None = None,
    ):
        self._identity_bias = _identity_bias(family, bounded, field_size)
        super().__init__(in_features, self._identity_bias.numel())

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        with torch.no_grad():
            self.bias.copy_(self._identity_bias)


def _identity_bias(family: TransformFamily, bounded: bool, field_size: tuple[int, ...] | None = None) -> Tensor:
    # with bounded=True the head's output goes through family.bound(), whose
    # identity is at zero; a field's identity is the zero field
    if getattr(family, "is_field", False):
        if field_size is None:
            raise ValueError(f"the {family.name!r} transform's head needs field_size, got None")
        return family.identity(1, field_size).flatten()
    return torch.zeros(family.num_params) if bounded else family.identity(1)[0]


# the largest feature map default_localization flattens as is: the 100x100 sequence canvas's 25x25
LOC_FEATURE_CAP = 25


def default_localization(in_channels: int, in_size: int | tuple[int, int]) -> tuple[nn.Module, int]:
    """A small conv localisation net for ``(in_channels, *in_size)`` inputs.

    conv 5x5 (20) -> [max-pool 2] -> ReLU -> conv 5x5 (20) -> [max-pool 2] -> ReLU
    -> [adaptive average pool] -> FC 50 -> ReLU, the paper's ST-CNN localisation
    net; pooling is skipped on inputs too small for it. Returns the net, mapping
    ``(B, in_channels, H, W)`` to ``(B, 50)``, and its number of output features (50).

    The FC layer's size would grow with the input (16M parameters on 512x512),
    so a feature map larger than ``LOC_FEATURE_CAP`` (25) on a side is averaged
    down to at most 25 x 25 (``nn.AdaptiveAvgPool2d((min(h, 25), min(w, 25)))``
    before Flatten): the parameter count stops growing past 100 x 100 inputs.
    25 is the largest map of the models stnkit builds (the 100x100 sequence
    canvas), so those, and every input up to 103 px a side, keep the exact
    structure (no pooling layer) they always had.

    Example:
        >>> net, features = default_localization(1, (28, 28))
        >>> features, net(torch.rand(2, 1, 28, 28)).shape
        (50, torch.Size([2, 50]))
        >>> net, _ = default_localization(3, (224, 224))  # 56 x 56 features averaged to 25 x 25
        >>> net[-4], net[-2].in_features
        (AdaptiveAvgPool2d(output_size=(25, 25)), 12500)

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, appendix (distorted MNIST).
    """
    check_int("in_channels", in_channels)
    h, w = check_size("in_size", in_size)
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(2):
        layers.append(nn.Conv2d(c, 20, kernel_size=5, padding=2))
        if min(h, w) >= 4:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        layers.append(nn.ReLU(inplace=True))
        c = 20
    if h > LOC_FEATURE_CAP or w > LOC_FEATURE_CAP:  # only then: smaller inputs keep their structure and keys
        h, w = min(h, LOC_FEATURE_CAP), min(w, LOC_FEATURE_CAP)
        layers.append(nn.AdaptiveAvgPool2d((h, w)))
    layers += [nn.Flatten(), nn.Linear(c * h * w, 50), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), 50


# the default field_size of a dense / velocity SpatialTransformer: each side of the output, at most 8
FIELD_SIZE_CAP = 8

# the largest feature map default_localization_3d flattens as is: 6^3 voxels (20 * 216 = 4320 features)
LOC_FEATURE_CAP_3D = 6


def default_localization_3d(in_channels: int, in_size: int | tuple[int, int, int]) -> tuple[nn.Module, int]:
    """The 3-D twin of :func:`default_localization`, for ``(in_channels, D, H, W)`` volumes.

    conv3d 5x5x5 (20) -> [max-pool 2] -> ReLU -> conv3d 5x5x5 (20) -> [max-pool 2]
    -> ReLU -> [adaptive average pool] -> FC 50 -> ReLU (convolutions padded by 2,
    so they keep the size). Each max-pool is skipped when the smallest side is
    below 4, as in 2-D. A feature map larger than ``LOC_FEATURE_CAP_3D`` (6) on
    a side is averaged down to at most 6 x 6 x 6
    (``nn.AdaptiveAvgPool3d((min(d, 6), min(h, 6), min(w, 6)))``) before Flatten,
    so the FC layer has at most ``20 * 216 * 50`` weights whatever the volume
    (volumes up to 27 voxels a side keep the structure without that layer).
    Returns the net, mapping ``(B, in_channels, D, H, W)`` to ``(B, 50)``, and its
    number of output features (50).

    Example:
        >>> net, features = default_localization_3d(1, (8, 8, 8))
        >>> features, net(torch.rand(2, 1, 8, 8, 8)).shape
        (50, torch.Size([2, 50]))
        >>> net, _ = default_localization_3d(1, 64)  # 16^3 features averaged to 6^3
        >>> net[-4], net[-2].in_features
        (AdaptiveAvgPool3d(output_size=(6, 6, 6)), 4320)
    """
    check_int("in_channels", in_channels)
    size = check_size_3d("in_size", in_size)
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(2):
        layers.append(nn.Conv3d(c, 20, kernel_size=5, padding=2))
        if min(size) >= 4:
            layers.append(nn.MaxPool3d(2))
            size = tuple(n // 2 for n in size)
        layers.append(nn.ReLU(inplace=True))
        c = 20
    if max(size) > LOC_FEATURE_CAP_3D:
        size = tuple(min(n, LOC_FEATURE_CAP_3D) for n in size)
        layers.append(nn.AdaptiveAvgPool3d(size))
    layers += [nn.Flatten(), nn.Linear(c * size[0] * size[1] * size[2], 50), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), 50


def _is_triple(size: object) -> bool:
    return isinstance(size, (tuple, list, torch.Size)) and len(size) == 3


class SpatialTransformer(nn.Module):
    """Localisation net -> transform family -> grid generator -> sampler.

    Convention: the predicted parameters map **output** coordinates to
    **input** coordinates, normalised to ``[-1, 1]``, x before y (as
    ``F.affine_grid``), ``align_corners=False`` by default.

    Shapes: input ``(B, C, H, W)``; output ``(B, C, H_out, W_out)`` (every
    channel sampled at the same points); parameters ``(B, num_params)``.

    Volumes: a 3-tuple ``in_size`` ``(D, H, W)`` (or a 3-D ``TransformFamily``)
    makes a 3-D transformer: the family is ``get_transform(transform, dims=3)``
    (``"affine"`` is then the 12-parameter :class:`~stnkit.geometry.Affine3D`),
    the input ``(B, C, D, H, W)``, ``out_size`` and ``loc_size`` ``(D, H, W)``
    (or an int: a cube), the default localisation net
    :func:`default_localization_3d`, ``bilinear`` trilinear (``bicubic`` is
    refused). An int ``in_size`` with a name means 2-D, as before.

    Args:
        localization: any module mapping the input ``(B, C, H, W)`` to features
            ``(B, ...)``; a regression head sized to the family is appended and
            initialised to the identity. ``None`` builds a small conv net from
            ``in_channels`` and ``in_size``.
        transform: family name or ``TransformFamily`` (``get_transform("tps", grid_size=3)``).
        out_size: ``(H_out, W_out)`` of the output; ``None`` keeps the input size.
            A smaller size downsamples.
        mode, padding_mode, align_corners: passed to the sampler.
        in_channels, in_size: the input's channels and ``(H, W)``; needed for the
            default localisation net, and let a custom one's feature size be
            found at construction.
        bounded: squash the parameters into a safe range around the identity
            (``family.bound``), which keeps a transformer from collapsing.
        loc_size: ``(H, W)`` (or an int) of a downsampled copy of the input that
            the localisation net sees (area averaging), while the sampler still
            reads the full-resolution input, as the text-recognition
            transformers (RARE, ASTER) do. Halving the size cuts the
            localisation net's cost about four times. ``None``: the input itself.
        field_size: for ``transform="dense"`` or ``"velocity"`` only: the ``(H, W)``
            (``(D, H, W)``) of the field the head predicts, or an int. ``None``: each
            side of the output size capped at ``FIELD_SIZE_CAP`` (8).

    Dense fields: with ``transform="dense"`` or ``"velocity"`` (or their families,
    ``get_transform("velocity", steps=4)``) the head predicts a low-resolution
    field ``(B, dims, *field_size)`` (channels ``(x, y[, z])``, normalised,
    :mod:`stnkit.geometry.fields`) instead of a parameter vector: a linear layer
    from the localisation features to ``dims * prod(field_size)`` values, weights
    and bias zero, so the transformer starts as the identity. The field is
    upsampled to the output size (``F.interpolate``, bilinear / trilinear, this
    module's ``align_corners``: normalised displacements need no rescaling),
    then warped as ``stnkit.warp(x, field, transform)`` does; a velocity field is
    upsampled first and integrated at the output size. ``forward(x,
    return_params=True)`` returns the low-resolution field; :meth:`upsample_field`
    gives the full one. ``bounded=True`` is refused (fields have no bounded form).

    Example:
        >>> st = SpatialTransformer(transform="affine", in_channels=1, in_size=(28, 28))
        >>> x = torch.rand(4, 1, 28, 28)
        >>> y, params = st(x, return_params=True)
        >>> y.shape, params.shape
        (torch.Size([4, 1, 28, 28]), torch.Size([4, 6]))
        >>> torch.allclose(y, x, atol=1e-5)  # identity at initialisation (float32 rounding ~2e-6)
        True
        >>> st = SpatialTransformer(transform="tps", in_channels=3, in_size=32, out_size=(16, 24))
        >>> st(torch.rand(2, 3, 32, 32)).shape  # a smaller out_size downsamples
        torch.Size([2, 3, 16, 24])
        >>> st = SpatialTransformer(transform="dense", in_channels=1, in_size=(8, 16, 16), field_size=4)
        >>> y, field = st(torch.rand(2, 1, 8, 16, 16), return_params=True)
        >>> y.shape, field.shape, bool(field.abs().max() == 0)  # a zero field at initialisation
        (torch.Size([2, 1, 8, 16, 16]), torch.Size([2, 3, 4, 4, 4]), True)

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015.
    """

    def __init__(
        self,
        localization: nn.Module | None = None,
        transform: str | TransformFamily = "affine",
        out_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        in_channels: int | None = None,
        in_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
        bounded: bool = False,
        loc_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
        field_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
    ):
        super().__init__()
        if isinstance(transform, TransformFamily) and transform.dims == 3 or _is_triple(in_size):
            self.dims = 3
            self.family = get_transform(transform, dims=3)
            size_check = check_size_3d
        else:
            self.dims = 2
            self.family = get_transform(transform)
            size_check = check_size
        self.is_field = bool(getattr(self.family, "is_field", False))
        self.transform = self.family.name
        self.out_size = None if out_size is None else size_check("out_size", out_size)
        self.mode = check_choice("mode", mode, MODES)
        if self.dims == 3 and mode == "bicubic":
            raise ValueError(
                "mode 'bicubic' is 2-D only; use 'bilinear' (trilinear) or 'nearest' for a 3-D transformer"
            )
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.align_corners = bool(align_corners)
        self.bounded = bool(bounded)
        self.in_channels = in_channels
        self.in_size = None if in_size is None else size_check("in_size", in_size)
        self.loc_size = None if loc_size is None else size_check("loc_size", loc_size)
        if self.loc_size is not None and self.in_size is not None and not _fits(self.loc_size, self.in_size):
            raise ValueError(f"loc_size must not exceed in_size {self.in_size}, got {self.loc_size}")
        self.field_size = self._field_size(field_size, size_check)
        if localization is None:
            if in_channels is None or in_size is None:
                raise ValueError(
                    "the default localisation net needs in_channels and in_size; "
                    f"got in_channels={in_channels!r}, in_size={in_size!r}"
                )
            make = default_localization if self.dims == 2 else default_localization_3d
            localization, features = make(in_channels, self.loc_size or self.in_size)
        elif not isinstance(localization, nn.Module):
            raise TypeError(f"localization must be an nn.Module or None, got {type(localization).__name__}")
        else:
            features = self._infer_features(localization)
        self.localization = localization
        if features is None:
            self.head = _LazyIdentityHead(self.family, self.bounded, self.field_size)
        else:
            self.head = IdentityHead(features, self.family, self.bounded, self.field_size)

    def _field_size(self, field_size, size_check) -> tuple[int, ...] | None:
        """The predicted field's spatial size (fields only): given, or the output size capped at FIELD_SIZE_CAP."""
        if not self.is_field:
            if field_size is not None:
                raise ValueError(
                    f"field_size is for the 'dense' and 'velocity' transforms, got field_size={field_size!r} "
                    f"with transform {self.transform!r}"
                )
            return None
        if self.bounded:
            raise ValueError(f"bounded=True has no meaning for the {self.transform!r} transform (a field), got True")
        if field_size is not None:
            return size_check("field_size", field_size)
        size = self.out_size or self.in_size
        if size is None:
            raise ValueError(
                f"the {self.transform!r} transform needs field_size, or out_size or in_size to derive it, got None"
            )
        return tuple(min(n, FIELD_SIZE_CAP) for n in size)

    def _infer_features(self, localization: nn.Module) -> int | None:
        if self.in_channels is None or self.in_size is None:
            return None
        probe = torch.zeros(1, self.in_channels, *(self.loc_size or self.in_size))
        was_training = localization.training
        localization.eval()
        with torch.no_grad():
            feats = localization(probe)
        localization.train(was_training)
        return int(feats[0].numel())

    @property
    def num_params(self) -> int:
        """The values the head predicts per sample: ``family.num_params``, or ``dims * prod(field_size)`` for a field."""
        return int(self.head.out_features)

    def check_input(self, x: object) -> Tensor:
        """``x`` as an image batch ``(B, C, H, W)`` that fits the channels and size given at construction.

        Example:
            >>> SpatialTransformer(in_channels=1, in_size=8).check_input(torch.rand(1, 3, 8, 8))
            Traceback (most recent call last):
            ...
            ValueError: x must have shape (B, 1, 8, 8) for this transformer, got shape (1, 3, 8, 8)
        """
        if self.dims == 3:
            return self._check_volume(x)
        x = check_image("x", x)
        c, size = self.in_channels, self.in_size
        if (c is not None and x.shape[1] != c) or (size is not None and tuple(x.shape[-2:]) != size):
            want = f"(B, {c if c is not None else 'C'}, {size[0] if size else 'H'}, {size[1] if size else 'W'})"
            raise ValueError(f"x must have shape {want} for this transformer, got shape {tuple(x.shape)}")
        return x

    def _check_volume(self, x: object) -> Tensor:
        x = check_image_or_volume("x", x)
        c, size = self.in_channels, self.in_size
        if x.ndim != 5 or (c is not None and x.shape[1] != c) or (size is not None and tuple(x.shape[2:]) != size):
            dhw = ", ".join(str(n) for n in size) if size else "D, H, W"
            raise ValueError(
                f"x must have shape (B, {c if c is not None else 'C'}, {dhw}) for this 3-D transformer, "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def predict_params(self, x: Tensor) -> Tensor:
        """The transform parameters ``(B, num_params)`` for an input batch ``(B, C, H, W)``.

        Example:
            >>> st = SpatialTransformer(transform="attention", in_channels=1, in_size=8)
            >>> st.predict_params(torch.rand(2, 1, 8, 8))
            tensor([[1., 0., 0.],
                    [1., 0., 0.]], grad_fn=<AddmmBackward0>)
        """
        feats = self.localization(self.loc_input(x))
        raw = self.head(feats.reshape(feats.shape[0], -1))
        if self.is_field:  # (B, dims, *field_size)
            return raw.view(raw.shape[0], self.dims, *self.field_size)
        return self.family.bound(raw) if self.bounded else raw

    def loc_input(self, x: Tensor) -> Tensor:
        """What the localisation net sees: ``x``, or its area-downsampled copy ``(B, C, *loc_size)``.

        Example:
            >>> st = SpatialTransformer(in_channels=1, in_size=8, loc_size=4)
            >>> st.loc_input(torch.rand(2, 1, 8, 8)).shape
            torch.Size([2, 1, 4, 4])
        """
        if self.loc_size is None or tuple(x.shape[2:]) == self.loc_size:
            return x
        if self.dims == 3:
            return self._loc_input_3d(x)
        h, w = x.shape[-2:]
        lh, lw = self.loc_size
        if not _fits(self.loc_size, (h, w)):
            raise ValueError(f"x must be at least loc_size {self.loc_size}, got shape {tuple(x.shape)}")
        if h % lh == 0 and w % lw == 0:  # an exact average of whole blocks (and ONNX-exportable)
            return F.avg_pool2d(x, (h // lh, w // lw))
        return F.adaptive_avg_pool2d(x, self.loc_size)

    def _loc_input_3d(self, x: Tensor) -> Tensor:
        spatial = tuple(x.shape[2:])
        if not _fits(self.loc_size, spatial):
            raise ValueError(f"x must be at least loc_size {self.loc_size}, got shape {tuple(x.shape)}")
        if all(n % m == 0 for n, m in zip(spatial, self.loc_size)):
            return F.avg_pool3d(x, tuple(n // m for n, m in zip(spatial, self.loc_size)))
        return F.adaptive_avg_pool3d(x, self.loc_size)

    def grid(self, params: Tensor, in_size: int | tuple[int, int] | tuple[int, int, int]) -> Tensor:
        """The sampling grid ``(B, H_out, W_out, 2)`` of ``params`` ``(B, num_params)``.

        ``H_out, W_out`` is ``out_size``, or ``in_size`` (the input's ``(H, W)``)
        when ``out_size`` is ``None``; the grid is in this module's ``align_corners``.

        Example:
            >>> st = SpatialTransformer(in_channels=1, in_size=8, out_size=(4, 6))
            >>> st.grid(st.family.identity(2), (8, 8)).shape
            torch.Size([2, 4, 6, 2])
        """
        size = self.out_size or (check_size if self.dims == 2 else check_size_3d)("in_size", in_size)
        if self.is_field:
            return self.family.grid(self.upsample_field(params, size), size, self.align_corners)
        return self.family.grid(params, size, self.align_corners)

    def upsample_field(self, field: Tensor, size: int | tuple[int, int] | tuple[int, int, int]) -> Tensor:
        """A predicted field ``(B, dims, *field_size)`` at the output size ``(B, dims, *size)`` (fields only).

        ``F.interpolate`` (bilinear, trilinear in 3-D) with this module's
        ``align_corners``: the field is in the normalised frame, so its values need no
        rescaling; at ``field_size == size`` the field is returned as is.

        Example:
            >>> st = SpatialTransformer(transform="dense", in_channels=1, in_size=16, field_size=4)
            >>> st.upsample_field(torch.full((1, 2, 4, 4), 0.5), (16, 16)).unique()
            tensor([0.5000])
        """
        if not self.is_field:
            raise ValueError(f"upsample_field is for the 'dense' and 'velocity' transforms, not {self.transform!r}")
        field = self.family.check_params(field, "field")
        size = (check_size if self.dims == 2 else check_size_3d)("size", size)
        if tuple(field.shape[2:]) == size:
            return field
        mode = "bilinear" if self.dims == 2 else "trilinear"
        return F.interpolate(field, size=size, mode=mode, align_corners=self.align_corners)

    def forward(self, x: Tensor, return_params: bool = False):
        """Warp ``x`` ``(B, C, H, W)`` (or ``(B, C, D, H, W)``); returns the output
        ``(B, C, H_out, W_out)`` (``(B, C, D_out, H_out, W_out)``), or ``(output, params)``."""
        x = self.check_input(x)
        params = self.predict_params(x)
        out = sample(x, self.grid(params, x.shape[2:]), self.mode, self.padding_mode, self.align_corners)
        return (out, params) if return_params else out

    def extra_repr(self) -> str:
        return (
            f"transform={self.transform!r}, out_size={self.out_size}, mode={self.mode!r}, "
            f"padding_mode={self.padding_mode!r}, align_corners={self.align_corners}, bounded={self.bounded}"
            + (f", loc_size={self.loc_size}" if self.loc_size else "")
            + (f", field_size={self.field_size}" if self.field_size else "")
        )


def _fits(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    return all(a <= b for a, b in zip(small, big))


class _LazyIdentityHead(nn.LazyLinear):
    """An :class:`IdentityHead` whose input size is found at the first forward."""

    cls_to_become = IdentityHead

    def __init__(self, family: TransformFamily, bounded: bool, field_size: tuple[int, ...] | None = None):
        self._identity_bias = _identity_bias(family, bounded, field_size)
        super().__init__(self._identity_bias.numel())

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            IdentityHead.reset_parameters(self)  # type: ignore[arg-type]


def _check_transformers(owner: str, transformers: tuple) -> None:
    if not transformers:
        raise ValueError(f"{owner} needs at least one transformer, got none")
    for i, t in enumerate(transformers):
        if not isinstance(t, SpatialTransformer):
            raise TypeError(f"transformers[{i}] must be a SpatialTransformer, got {type(t).__name__}")


class ParallelTransformers(nn.Module):
    """Several transformers on the same input, outputs concatenated along channels.

    The paper's 2x/4x ST-CNN: each transformer can learn to attend to a
    different part. ``forward(x, return_params=True)`` also returns the list of
    parameters.

    Shapes: input ``(B, C, H, W)``; output ``(B, n C, H_out, W_out)`` with the
    channels of transformer ``k`` at ``[k C, (k + 1) C)``; all transformers must
    share ``out_size``. Each uses its own family, sampler options and
    ``align_corners``. Volumes: 3-D transformers (all of them, not mixed with 2-D
    ones) on ``(B, C, D, H, W)`` give ``(B, n C, D_out, H_out, W_out)``.

    Example:
        >>> a = SpatialTransformer(transform="affine", in_channels=1, in_size=16, out_size=8)
        >>> b = SpatialTransformer(transform="tps", in_channels=1, in_size=16, out_size=8)
        >>> out, params = ParallelTransformers(a, b)(torch.rand(2, 1, 16, 16), return_params=True)
        >>> out.shape, [p.shape for p in params]
        (torch.Size([2, 2, 8, 8]), [torch.Size([2, 6]), torch.Size([2, 32])])

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, sections 3.4 and 4.3 (2x/4x ST-CNN).
    """

    def __init__(self, *transformers: SpatialTransformer):
        super().__init__()
        _check_transformers("ParallelTransformers", transformers)
        dims = [t.dims for t in transformers]
        if len(set(dims)) > 1:
            raise ValueError(f"parallel transformers must all be 2-D or all 3-D, got dims {dims}")
        sizes = {t.out_size for t in transformers}
        if len(sizes) > 1:
            raise ValueError(
                f"parallel transformers must share out_size to be concatenated, got {sorted(map(str, sizes))}"
            )
        self.transformers = nn.ModuleList(transformers)

    def forward(self, x: Tensor, return_params: bool = False):
        outs, params = zip(*(t(x, return_params=True) for t in self.transformers))
        out = torch.cat(outs, dim=1)
        return (out, list(params)) if return_params else out


class SeriesTransformers(nn.Module):
    """Transformers in series, sampling the input only once.

    Each stage's localisation net sees the previous stage's output, and the
    final output is sampled from the original input through the composed
    transform ``T_1 o T_2 o ... o T_n`` (exact for every family, as point maps
    compose), so interpolation blur does not accumulate: the output point ``p``
    reads the input at ``T_1(T_2(...T_n(p)))`` (:func:`~stnkit.geometry.compose_grid`).

    Shapes: input ``(B, C, H, W)``; output ``(B, C, H_out, W_out)`` with the last
    stage's ``out_size`` (or the size before it); ``return_params=True`` also
    gives the list of each stage's ``(B, num_params)``. The output of stage
    ``i`` is sampled with stage ``i``'s ``mode``, ``padding_mode`` and
    ``align_corners``. Every stage must share one ``align_corners``: the composed
    transform is built in a single frame convention (mixed settings are refused).

    Volumes: 3-D stages (all of them) on ``(B, C, D, H, W)``; the chain is composed
    point-wise as in 2-D (for matrix families that is the product of their 4x4
    matrices). A ``dense`` or ``velocity`` stage (:class:`SpatialTransformer` with a
    field) may be the last one only, as in a registration that aligns affinely
    first and deforms after: its upsampled field's grid starts the chain
    (:func:`~stnkit.geometry.compose_grid`).

    Example:
        >>> a = SpatialTransformer(transform="attention", in_channels=1, in_size=16, out_size=8)
        >>> b = SpatialTransformer(transform="tps", in_channels=1, in_size=8)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> out = SeriesTransformers(a, b)(x)
        >>> out.shape
        torch.Size([2, 1, 8, 8])
        >>> torch.allclose(out, F.avg_pool2d(x, 2), atol=1e-6)  # identity at init, half size
        True

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, section 3.4.
    """

    def __init__(self, *transformers: SpatialTransformer):
        super().__init__()
        _check_transformers("SeriesTransformers", transformers)
        corners = [t.align_corners for t in transformers]
        if len(set(corners)) > 1:
            raise ValueError(
                "SeriesTransformers samples the composed transform once, so every stage must share one "
                f"align_corners, got {corners} (stage by stage)"
            )
        dims = [t.dims for t in transformers]
        if len(set(dims)) > 1:
            raise ValueError(f"transformers in series must all be 2-D or all 3-D, got dims {dims}")
        fields = [i for i, t in enumerate(transformers[:-1]) if t.is_field]
        if fields:
            raise ValueError(
                f"a dense or velocity transformer can only be the last stage of a series, got one at stage {fields[0]}"
            )
        self.dims = dims[0]
        self.transformers = nn.ModuleList(transformers)

    def forward(self, x: Tensor, return_params: bool = False):
        x = check_image("x", x) if self.dims == 2 else self.transformers[0].check_input(x)
        params: list[Tensor] = []
        current = x
        size = tuple(x.shape[2:])
        for i, t in enumerate(self.transformers):
            params.append(t.predict_params(current))
            size = t.out_size or size
            families = [s.family for s in self.transformers[: i + 1]]
            last = t.upsample_field(params[-1], size) if t.is_field else params[-1]
            grid = compose_grid([*params[:-1], last], families, size, t.align_corners)
            current = sample(x, grid, t.mode, t.padding_mode, t.align_corners)
        return (current, params) if return_params else current


class InverseCompositionalTransformer(SpatialTransformer):
    """Inverse compositional spatial transformer (IC-STN): one localisation net, applied recurrently.

    Starting from the identity ``p_0``, step ``k`` samples the **original** input
    with the current warp, lets the shared localisation net predict an update
    ``dp_k`` from that warped image, and composes the update with the warp in
    parameter space: ``p_k = family.compose(p_{k-1}, dp_k)`` (the update acts
    first, on the output's points, then the current warp:
    :meth:`~stnkit.geometry.MatrixFamily.compose`). Only warp parameters are
    passed from step to step; the output is the input sampled once with
    ``p_steps``, never a warped image warped again, so no resampling blur
    accumulates and no ink is cut at the border between steps. The first step
    reads the input itself (``p_0`` is the identity, so sampling would only add
    float rounding).

    Convention: as :class:`SpatialTransformer`: parameters map **output** to
    **input** coordinates, normalised to ``[-1, 1]``, x before y. Shapes: input
    ``(B, C, H, W)``; output ``(B, C, H_out, W_out)``; parameters
    ``(B, num_params)`` (the composed warp). The intermediate warps are sampled
    at the input's size, for the localisation net. At initialisation every
    update is the identity, so the module is the identity.

    Args:
        localization, transform, out_size, mode, padding_mode, align_corners,
            in_channels, in_size, bounded, loc_size: as :class:`SpatialTransformer`
            (``bounded`` bounds each update). ``transform`` must be a matrix
            family (translation, attention, similarity, affine, projective):
            composing in parameter space needs :meth:`~stnkit.geometry.MatrixFamily.compose`.
            A 3-tuple ``in_size`` (or a 3-D family) makes it 3-D, as
            :class:`SpatialTransformer`: the 3-D matrix families (``rigid`` too) compose
            their 4x4 matrices; ``tps`` and the fields are refused.
        steps: the number of recurrent warps (the paper's IC-STN-1, -2, -4).

    Example:
        >>> ic = InverseCompositionalTransformer(transform="projective", steps=4, in_channels=1, in_size=(28, 28))
        >>> x = torch.rand(2, 1, 28, 28)
        >>> y, params = ic(x, return_params=True)
        >>> y.shape, params.shape
        (torch.Size([2, 1, 28, 28]), torch.Size([2, 8]))
        >>> torch.allclose(y, x, atol=1e-5)  # identity at initialisation
        True
        >>> len(ic.step_params(x))  # the composed warp after each step
        4

    References:
        C.-H. Lin and S. Lucey, "Inverse Compositional Spatial Transformer
        Networks", CVPR 2017 (arXiv:1612.03897), section 4.
    """

    def __init__(
        self,
        localization: nn.Module | None = None,
        transform: str | TransformFamily = "projective",
        steps: int = 4,
        out_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        in_channels: int | None = None,
        in_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
        bounded: bool = False,
        loc_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
    ):
        three = isinstance(transform, TransformFamily) and transform.dims == 3 or _is_triple(in_size)
        family = get_transform(transform, dims=3 if three else None)
        if not getattr(family, "is_matrix", False):
            names = (
                "translation, attention, rigid, similarity, affine, projective"
                if three
                else ("translation, attention, similarity, affine, projective")
            )
            raise ValueError(
                f"transform must be a matrix family ({names}) for parameter-space composition, got {family.name!r}"
            )
        self.steps = check_int("steps", steps)
        super().__init__(
            localization,
            family,
            out_size=out_size,
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
            in_channels=in_channels,
            in_size=in_size,
            bounded=bounded,
            loc_size=loc_size,
        )

    def step_params(self, x: Tensor) -> list[Tensor]:
        """The composed warp ``(B, num_params)`` after each of the ``steps`` steps, for an input ``(B, C, H, W)``.

        Example:
            >>> ic = InverseCompositionalTransformer(transform="affine", steps=2, in_channels=1, in_size=8)
            >>> [p.shape for p in ic.step_params(torch.rand(3, 1, 8, 8))]
            [torch.Size([3, 6]), torch.Size([3, 6])]
        """
        x = self.check_input(x)
        size = x.shape[2:]  # torch.Size: check_size reads it under tracing too
        params = self.predict_params(x)  # step 1 reads the input itself: p_0 is the identity
        out = [params]
        for _ in range(self.steps - 1):
            current = sample(
                x, self.family.grid(params, size, self.align_corners), self.mode, self.padding_mode, self.align_corners
            )
            params = self.family.compose(params, self.predict_params(current))
            out.append(params)
        return out

    def forward(self, x: Tensor, return_params: bool = False):
        """Warp ``x`` ``(B, C, H, W)`` with the composed warp; the output ``(B, C, H_out, W_out)``, or ``(output, params)``."""
        params = self.step_params(x)[-1]
        out = sample(x, self.grid(params, x.shape[2:]), self.mode, self.padding_mode, self.align_corners)
        return (out, params) if return_params else out

    def extra_repr(self) -> str:
        return f"steps={self.steps}, " + super().extra_repr()
