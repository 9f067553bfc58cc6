"""Fine-grained recognition with parallel transformers: one backbone per transformer, features concatenated.

The paper's 2x and 4x ST-CNN on CUB-200-2011 (Jaderberg et al. 2015, section 4.3):
``k`` attention transformers (scale and translation) work in parallel on the
image, each crop goes through its own backbone, and the ``k`` feature vectors
are concatenated and classified by one linear (softmax) layer.
:func:`parallel_st_cnn` builds that as an :class:`~stnkit.nn.STClassifier`
(:class:`~stnkit.nn.ParallelTransformers`, then :class:`ConcatBackbones`), so
``model.warp_input(x)`` gives every transformer's crop and parameters.

A backbone here is any factory of the :data:`~stnkit.models.backbones.BACKBONES`
signature ``(in_channels, in_size, num_classes)``; it is built with
``num_classes=features`` and its output is that branch's feature vector (for the
ResNets: the pooled 512 features through their last linear layer, so the branch
linear and the classifier compose to one linear map of the concatenated pooled
features, the paper's softmax on concatenated features).

:class:`SmallConvNet` is a backbone with a width knob, small enough for the CPU
(``stnkit reproduce parts`` matches parameter counts with it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number, check_size
from ..geometry import get_transform
from ..nn import HeatmapLocalization, ParallelTransformers, SpatialTransformer, STClassifier
from .classifiers import count_parameters


class ConcatBackbones(nn.Module):
    """``k`` backbones, one per group of ``in_channels`` input channels; features concatenated, then a linear layer.

    Shapes: input ``(B, k * in_channels, H, W)`` (the parallel transformers' outputs, transformer
    ``i``'s channels at ``[i C, (i + 1) C)``); each backbone maps ``(B, C, H, W)`` to ``(B, features)``;
    output ``(B, num_classes)`` logits.

    Example:
        >>> nets = [SmallConvNet(3, 8, width=4) for _ in range(2)]
        >>> ConcatBackbones(nets, in_channels=3, features=8, num_classes=5)(torch.rand(2, 6, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(self, backbones: Sequence[nn.Module], in_channels: int, features: int, num_classes: int):
        super().__init__()
        backbones = list(backbones)
        if not backbones or not all(isinstance(b, nn.Module) for b in backbones):
            raise TypeError(f"backbones must be a non-empty sequence of nn.Module, got {backbones!r}")
        self.in_channels = check_int("in_channels", in_channels)
        self.features = check_int("features", features)
        self.backbones = nn.ModuleList(backbones)
        self.head = nn.Linear(len(backbones) * features, check_int("num_classes", num_classes))

    def branch_features(self, x: Tensor) -> list[Tensor]:
        """Each backbone's ``(B, features)`` for its group of channels."""
        k, c = len(self.backbones), self.in_channels
        if x.ndim != 4 or x.shape[1] != k * c:
            raise ValueError(f"x must have shape (B, {k * c}, H, W) ({k} groups of {c} channels), got {tuple(x.shape)}")
        feats = [b(g) for b, g in zip(self.backbones, x.split(c, dim=1))]
        for i, f in enumerate(feats):
            if f.ndim != 2 or f.shape[1] != self.features:
                raise ValueError(f"backbone {i} must output (B, {self.features}) features, got {tuple(f.shape)}")
        return feats

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.cat(self.branch_features(x), dim=1))


class SmallConvNet(nn.Module):
    """conv 3x3 (w) -> BN -> ReLU -> max-pool, conv 3x3 (2w) -> BN -> ReLU -> max-pool, conv 3x3 (2w) -> BN
    -> ReLU -> max-pool, conv 3x3 (2w) -> BN -> ReLU, global average pool, linear: any input of 8 px or more.

    Example:
        >>> SmallConvNet(3, 10, width=8)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        w = check_int("width", width)
        layers: list[nn.Module] = []
        c = check_int("in_channels", in_channels)
        for i, out in enumerate((w, 2 * w, 2 * w, 2 * w)):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, check_int("num_classes", num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def part_localization(in_channels: int, width: int = 8) -> nn.Sequential:
    """A small localisation net for parts: conv 5x5 (width) -> max-pool -> ReLU -> conv 5x5 (16) -> max-pool
    -> ReLU -> average pool to 4x4 -> FC 16 -> ReLU; ``(B, in_channels, H, W)`` (H, W >= 4) to ``(B, 16)``.

    Example:
        >>> part_localization(3)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 16])
    """
    w = check_int("width", width)
    return nn.Sequential(
        nn.Conv2d(check_int("in_channels", in_channels), w, 5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, 16, 5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 16, 16),
        nn.ReLU(inplace=True),
    )


class CentreWindow(nn.Module):
    """A heatmap localiser's centre as ``attention`` features ``(B, 3)`` = ``(0, x, y)``: with an identity head
    of bias ``(s, 0, 0)`` (:func:`parallel_st_cnn` with ``window_scale``) the window is ``s`` wide at the centre.

    Example:
        >>> CentreWindow(3)(torch.rand(2, 3, 16, 16))  # uniform heatmap at the start: the middle
        tensor([[0., 0., 0.],
                [0., 0., 0.]], grad_fn=<CatBackward0>)
    """

    def __init__(
        self, in_channels: int, width: int = 16, depth: int = 3, evidence_classes: int = 0, temperature: float = 1.0
    ):
        super().__init__()
        self.heatmap = HeatmapLocalization(
            in_channels, 1, width=width, depth=depth, temperature=temperature, evidence_classes=evidence_classes
        )

    def forward(self, x: Tensor) -> Tensor:
        c = self.heatmap(x)
        return torch.cat([c.new_zeros(c.shape[0], 1), c], dim=1)


def initial_windows(num_transformers: int, scale: float = 1.0, spread: float = 0.0) -> Tensor:
    """Start windows ``(k, 3)`` (``attention`` ``s, tx, ty``): scale ``scale``, centres on a grid of ``k`` cells.

    ``spread`` moves the centres from the middle: 2 transformers sit at ``tx = -spread, +spread``,
    4 at the four ``(+-spread, +-spread)``, others along x (1: the centre). ``scale=1, spread=0``
    is the identity (the paper's initialisation).

    Example:
        >>> initial_windows(2, 0.5, 0.5)
        tensor([[ 0.5000, -0.5000,  0.0000],
                [ 0.5000,  0.5000,  0.0000]])
    """
    k = check_int("num_transformers", num_transformers)
    s = check_number("scale", scale, low=1e-3, high=2.0)
    d = check_number("spread", spread, low=0.0, high=1.0)
    if k == 4:
        centres = torch.tensor([[-d, -d], [d, -d], [-d, d], [d, d]])
    elif k == 1:
        centres = torch.zeros(1, 2)
    else:
        centres = torch.stack([torch.linspace(-d, d, k), torch.zeros(k)], dim=1)
    return torch.cat([torch.full((k, 1), s), centres], dim=1)


def parallel_st_cnn(
    backbone: Callable[..., nn.Module],
    num_transformers: int,
    *,
    in_channels: int,
    in_size: int | tuple[int, int],
    crop_size: int | tuple[int, int],
    num_classes: int,
    features: int,
    loc_size: int | tuple[int, int] | None = None,
    localization: Callable[[], nn.Module] | None = None,
    init_scale: float = 1.0,
    init_spread: float = 0.0,
    window_scale: float | None = None,
    evidence_classes: int = 0,
    heatmap_temperature: float = 1.0,
) -> STClassifier:
    """The paper's k x ST-CNN: ``k`` parallel ``attention`` transformers, one backbone per crop, features concatenated.

    Args:
        backbone: a factory ``(in_channels=, in_size=, num_classes=) -> nn.Module``
            (:func:`~stnkit.models.backbones.load_backbone`); built once per transformer with
            ``num_classes=features``.
        num_transformers: ``k``.
        in_channels, in_size: the image's channels and ``(H, W)``.
        crop_size: each transformer's output ``(H, W)``, the backbones' input.
        num_classes: the classes.
        features: each backbone's output size.
        loc_size: the size of the area-downsampled copy the localisation nets read (``None``: the image).
        localization: a factory of one localisation net (called once per transformer); ``None``:
            :func:`~stnkit.nn.default_localization`.
        init_scale, init_spread: the start windows (:func:`initial_windows`); the heads' weights are zero,
            so every transformer starts at its window whatever the image.
        window_scale: ``None``: as above. A number ``s``: each transformer's localisation net is a
            :class:`CentreWindow` (a translation-equivariant heatmap, soft-argmax centre; ``localization`` and
            the start windows are then not used) and its window has the fixed scale ``s`` (the head is the
            identity map plus ``(s, 0, 0)``, frozen): the window starts ``s`` wide at the middle and moves
            where the heatmap peaks.
        evidence_classes: with ``window_scale``: each heatmap also pools ``evidence_classes`` class scores
            (:class:`~stnkit.nn.HeatmapLocalization`), read after a forward from
            ``transformer.localization.heatmap.pooled_evidence`` of each transformer (a part loss).
        heatmap_temperature: with ``window_scale``: the heatmaps' softmax temperature (smaller: sharper).

    Example:
        >>> from stnkit.models.backbones import load_backbone
        >>> m = parallel_st_cnn(load_backbone("resnet18"), 2, in_channels=3, in_size=64, crop_size=32,
        ...                     num_classes=4, features=16)
        >>> out, params = m.warp_input(torch.rand(1, 3, 64, 64))
        >>> m(torch.rand(2, 3, 64, 64)).shape, tuple(out.shape), len(params)
        (torch.Size([2, 4]), (1, 6, 32, 32), 2)
    """
    k = check_int("num_transformers", num_transformers)
    in_size = check_size("in_size", in_size)
    crop = check_size("crop_size", crop_size)
    loc_size = None if loc_size is None else check_size("loc_size", loc_size)
    family = get_transform("attention")
    windows = initial_windows(k, init_scale, init_spread)
    if window_scale is not None:
        window_scale = check_number("window_scale", window_scale, low=1e-3, high=2.0)
    sts = []
    for i in range(k):
        if window_scale is not None:
            loc = CentreWindow(in_channels, evidence_classes=evidence_classes, temperature=heatmap_temperature)
        else:
            loc = None if localization is None else localization()
        st = SpatialTransformer(
            loc,
            family,
            out_size=crop,
            in_channels=in_channels,
            in_size=in_size,
            loc_size=loc_size,
        )
        with torch.no_grad():
            if window_scale is None:
                st.head.bias.copy_(windows[i])
            else:
                st.head.weight.copy_(torch.eye(3))
                st.head.bias.copy_(torch.tensor([window_scale, 0.0, 0.0]))
                st.head.requires_grad_(False)
        sts.append(st)
    stack = sts[0] if k == 1 else ParallelTransformers(*sts)
    nets = [backbone(in_channels=in_channels, in_size=crop, num_classes=features) for _ in range(k)]
    return STClassifier(stack, ConcatBackbones(nets, in_channels, features, num_classes))


def width_for_parameters(build: Callable[[int], nn.Module], target: int, widths: Sequence[int] = range(2, 257)) -> int:
    """The width ``w`` among ``widths`` (ascending) whose ``build(w)`` has the parameter count nearest ``target``.

    The count must grow with the width (bisection: a few builds, not one per width).

    Example:
        >>> width_for_parameters(lambda w: nn.Linear(10, w), 115)  # 11 parameters per unit
        10
    """
    widths = list(widths)
    count = {}

    def params(i: int) -> int:
        if i not in count:
            count[i] = count_parameters(build(widths[i]))
        return count[i]

    lo, hi = 0, len(widths) - 1
    while lo < hi:  # the first width with at least target parameters
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((i for i in (lo - 1, lo) if 0 <= i < len(widths)), key=lambda i: abs(params(i) - target))
    return widths[best]


__all__ = [
    "CentreWindow",
    "ConcatBackbones",
    "SmallConvNet",
    "count_parameters",
    "initial_windows",
    "parallel_st_cnn",
    "part_localization",
    "width_for_parameters",
]
