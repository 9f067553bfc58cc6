"""A classifier behind spatial transformer(s): :class:`STClassifier` and :func:`with_transformer`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch  # noqa: F401  (used by the doctests)
from torch import Tensor, nn

from .._checks import check_int, check_size
from ..geometry import get_transform
from .transformer import ParallelTransformers, SpatialTransformer

# with_transformer's default: the localisation net reads a copy at most this many px a side
LOC_SIDE = 64


class STClassifier(nn.Module):
    """Spatial transformer(s) followed by a classifier.

    ``forward(x)`` returns logits; ``warp_input(x)`` returns the transformer's
    output (the warped input the classifier sees) and parameters (a list, one
    entry per parallel transformer). The state_dict keys start with
    ``transformer.`` and ``classifier.``.

    Example:
        >>> st = SpatialTransformer(in_channels=1, in_size=16)
        >>> model = STClassifier(st, nn.Sequential(nn.Flatten(), nn.Linear(256, 3)))
        >>> out, params = model.warp_input(torch.rand(2, 1, 16, 16))
        >>> model(torch.rand(2, 1, 16, 16)).shape, out.shape, params[0].shape
        (torch.Size([2, 3]), torch.Size([2, 1, 16, 16]), torch.Size([2, 6]))
    """

    def __init__(self, transformer: nn.Module, classifier: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.classifier = classifier

    def warp_input(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The transformers' output for ``x`` (what the classifier sees) and their parameters, one per transformer."""
        out, params = self.transformer(x, return_params=True)
        return out, params if isinstance(params, list) else [params]

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.transformer(x))


def default_loc_size(in_size: int | tuple[int, int]) -> tuple[int, int] | None:
    """:func:`with_transformer`'s default ``loc_size``: ``None`` (the input itself) when its longest
    side is at most 64 px, otherwise ``(H // k, W // k)`` with ``k = ceil(max(H, W) / 64)``.

    Example:
        >>> default_loc_size((224, 224)), default_loc_size((64, 48)), default_loc_size((100, 300))
        ((56, 56), None, (20, 60))
    """
    h, w = check_size("in_size", in_size)
    if max(h, w) <= LOC_SIDE:
        return None
    k = math.ceil(max(h, w) / LOC_SIDE)
    return max(1, h // k), max(1, w // k)


def with_transformer(
    backbone: nn.Module,
    transform="affine",
    in_channels: int = 3,
    in_size: int | tuple[int, int] = (224, 224),
    out_size: int | tuple[int, int] | None = None,
    loc_size: int | tuple[int, int] | None = None,
    localization: nn.Module | Sequence[nn.Module] | None = None,
    num_transformers: int = 1,
    bounded: bool = False,
    padding_mode: str = "zeros",
    **family_options,
) -> STClassifier:
    """Spatial transformer(s) in front of any backbone, identity at initialisation: an :class:`STClassifier`.

    Convention: as :class:`SpatialTransformer` (parameters map output to input
    points, normalised to ``[-1, 1]``, x before y, ``align_corners=False``).

    Args:
        backbone: the classifier, any ``nn.Module``; it sees the warped input
            ``(B, in_channels * num_transformers, *out_size)``, so with
            ``num_transformers > 1`` it must take ``in_channels * num_transformers``
            channels (the transformers' outputs are concatenated along channels,
            :class:`ParallelTransformers`), e.g. ``resnet18(in_channels=3 * 2)``.
        transform: family name or :class:`~stnkit.geometry.TransformFamily`;
            ``family_options`` go to :func:`~stnkit.geometry.get_transform`
            (``grid_size=4`` for ``"tps"``).
        in_channels, in_size: the input's channels and ``(H, W)``.
        out_size: the transformers' output size (the backbone's input size); ``None``: ``in_size``.
        loc_size: the size of the downsampled copy (area averaging) the
            localisation net reads; the sampler still reads the full input.
            ``None``: :func:`default_loc_size`, the input itself when its longest
            side is <= 64 px, else the input divided by ``ceil(max(H, W) / 64)``
            per side (224x224 -> 56x56).
        localization: ``None``: :func:`default_localization` on ``loc_size`` for
            each transformer; else a module (one transformer) or a sequence of
            ``num_transformers`` distinct modules mapping ``(B, in_channels, *loc_size)``
            to features (a shared module would keep parallel transformers identical).
        num_transformers: transformers in parallel.
        bounded, padding_mode: as :class:`SpatialTransformer`.

    Example:
        >>> import torch
        >>> from stnkit.models.backbones import resnet18
        >>> model = with_transformer(resnet18(num_classes=10), in_size=(96, 96))
        >>> model.transformer.loc_size, model(torch.rand(2, 3, 96, 96)).shape
        ((48, 48), torch.Size([2, 10]))
    """
    if not isinstance(backbone, nn.Module):
        raise TypeError(
            "backbone must be an nn.Module (build one with stnkit.models.backbones.BACKBONES[name] or "
            f"load_backbone), got {type(backbone).__name__}"
        )
    check_int("in_channels", in_channels)
    in_size = check_size("in_size", in_size)
    n = check_int("num_transformers", num_transformers)
    family = get_transform(transform, **family_options)
    out_size = in_size if out_size is None else check_size("out_size", out_size)
    loc_size = default_loc_size(in_size) if loc_size is None else check_size("loc_size", loc_size)
    if localization is None:
        locs: list[nn.Module | None] = [None] * n
    elif isinstance(localization, nn.Module):
        if n != 1:
            raise ValueError(
                f"localization must be a sequence of num_transformers={n} distinct modules, got one "
                f"{type(localization).__name__}"
            )
        locs = [localization]
    else:
        locs = list(localization)
        if len(locs) != n or len({id(m) for m in locs}) != n:
            raise ValueError(
                f"localization must be {n} distinct modules (num_transformers), got {len(locs)} "
                f"({len({id(m) for m in locs})} distinct)"
            )
    transformers = [
        SpatialTransformer(
            loc,
            family,
            out_size=out_size,
            padding_mode=padding_mode,
            in_channels=in_channels,
            in_size=in_size,
            bounded=bounded,
            loc_size=loc_size,
        )
        for loc in locs
    ]
    stack = transformers[0] if n == 1 else ParallelTransformers(*transformers)
    return STClassifier(stack, backbone)
