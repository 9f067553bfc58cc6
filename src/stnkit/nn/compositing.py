"""Geometric image compositing: the ST-GAN's iterative warp generator and a small discriminator.

A foreground with an alpha channel is placed over a background by a warp that a
generator predicts from the composite itself: :class:`IterativeWarpGenerator`
applies ``steps`` localisation nets one after the other, each reading the
composite of the current warped foreground over the background and predicting an
update that is composed with the warp so far in parameter space (the homography
family by default), as :class:`~stnkit.nn.InverseCompositionalTransformer` does;
the **original** foreground is sampled once per step with the accumulated
parameters, never a warped image warped again. Every step's head starts at the
identity, so the untrained generator leaves the foreground where it is.
:class:`CompositeDiscriminator` tells composites from real images.

Foregrounds are **premultiplied** RGBA ``(B, 4, H, W)``: channels 0-2 hold colour
times alpha, channel 3 the alpha, so bilinear sampling with zero padding mixes a
transparent border correctly (:func:`composite`).

Convention: as every stnkit transformer, parameters map **output** points to
**input** points (here: composite pixels to foreground pixels), normalised to
``[-1, 1]``, x before y (``F.affine_grid``'s frame).

References:
    C.-H. Lin, E. Yumer, O. Wang, E. Shechtman, S. Lucey, "ST-GAN: Spatial
    Transformer Generative Adversarial Networks for Image Compositing", CVPR 2018
    (arXiv:1803.01837).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_image, check_int, check_size
from ..geometry import MODES, PADDING_MODES, TransformFamily, get_transform
from ..geometry.warp import sample
from .transformer import SpatialTransformer


def composite(foreground: Tensor, background: Tensor) -> Tensor:
    """The premultiplied RGBA ``foreground`` ``(B, C + 1, H, W)`` over ``background`` ``(B, C, H, W)``.

    ``out = fg[:, :C] + (1 - alpha) * bg`` (Porter and Duff's "over" with premultiplied colour).

    Example:
        >>> fg = torch.tensor([0.25, 0.0, 0.0, 0.5]).view(1, 4, 1, 1)  # red at half opacity, premultiplied
        >>> composite(fg, torch.ones(1, 3, 1, 1)).flatten()
        tensor([0.7500, 0.5000, 0.5000])
    """
    foreground = check_image("foreground", foreground)
    background = check_image("background", background)
    c = background.shape[1]
    if foreground.shape[1] != c + 1 or foreground.shape[0] != background.shape[0]:
        raise ValueError(
            f"foreground must have shape ({background.shape[0]}, {c + 1}, H, W) (premultiplied colour and alpha "
            f"over a {c}-channel background), got {tuple(foreground.shape)}"
        )
    if foreground.shape[2:] != background.shape[2:]:
        raise ValueError(
            f"foreground must have the background's size {tuple(background.shape[2:])}, got {tuple(foreground.shape[2:])}"
        )
    alpha = foreground[:, c:]
    return foreground[:, :c] + (1.0 - alpha) * background


class IterativeWarpGenerator(nn.Module):
    """ST-GAN's geometric generator: ``steps`` localisation nets, each updating the foreground's warp.

    Step ``k`` (``1..steps``) reads the composite ``I_{k-1}`` of the foreground
    warped by ``p_{k-1}`` over the background, together with the warped alpha
    (``C + 1`` channels), and its own localisation net predicts an update ``dp_k``;
    the warp becomes ``p_k = family.compose(p_{k-1}, dp_k)`` (the update acts first,
    on the composite's points, then the warp so far:
    :meth:`~stnkit.geometry.MatrixFamily.compose`). ``p_0`` is the identity, so step 1
    reads the unwarped composite (``init``, the foreground's initial placement, replaces the
    identity as ``p_0`` when given). The composite after step ``k`` samples the
    original foreground once with ``p_k`` (:meth:`warp_foreground`). Each step has
    its own net (ST-GAN's ``G_1 .. G_N``), so the steps can be trained one after
    the other, each with the earlier ones fixed (:meth:`step_parameters`).

    Each step is a :class:`~stnkit.nn.SpatialTransformer` (``transforms[k]``) used for
    its parameters only (:meth:`~stnkit.nn.SpatialTransformer.predict_params`: the
    localisation net, on an area-downsampled copy when ``loc_size`` is given, and an
    identity head), so every update is the identity at initialisation.

    Shapes: foreground ``(B, C + 1, H, W)`` premultiplied colour and alpha,
    background ``(B, C, H, W)``; parameters ``(B, num_params)``.

    Args:
        steps: the number of warp updates (ST-GAN's ``N``).
        transform: a 2-D matrix family name or family (``projective``, the
            homography, by default; ``affine``, ``similarity``, ...), which must
            compose in parameter space.
        in_size: ``(H, W)`` of the images (or an int).
        channels: ``C``, the background's colour channels (3).
        localization: ``None`` (:func:`~stnkit.nn.default_localization`), or a
            callable returning a fresh localisation module for each step (mapping
            ``(B, C + 1, *loc_size)`` to features).
        loc_size: the size the localisation nets read (area averaging), or ``None``: ``in_size``.
        mode, padding_mode, align_corners: the sampler's (``zeros`` padding leaves the
            foreground transparent outside its frame).

    Example:
        >>> gen = IterativeWarpGenerator(steps=3, in_size=16)
        >>> fg, bg = torch.rand(2, 4, 16, 16), torch.rand(2, 3, 16, 16)
        >>> params = gen(fg, bg)
        >>> len(params), params[-1].shape
        (3, torch.Size([2, 8]))
        >>> torch.equal(params[-1], gen.family.identity(2))  # identity at initialisation
        True
        >>> gen.composite(fg, bg, params[-1]).shape
        torch.Size([2, 3, 16, 16])

    References:
        Lin et al., "ST-GAN", CVPR 2018, section 3 (sequential warps, parameters composed).
    """

    def __init__(
        self,
        steps: int = 4,
        transform: str | TransformFamily = "projective",
        in_size: int | tuple[int, int] = 64,
        channels: int = 3,
        localization: Callable[[], nn.Module] | None = None,
        loc_size: int | tuple[int, int] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
    ):
        super().__init__()
        self.steps = check_int("steps", steps)
        family = get_transform(transform)
        if not getattr(family, "is_matrix", False) or family.dims != 2:
            raise ValueError(
                "transform must be a 2-D matrix family (translation, attention, similarity, affine, projective) "
                f"for parameter-space composition, got {family.name!r}"
            )
        self.family = family
        self.in_size = check_size("in_size", in_size)
        self.channels = check_int("channels", channels)
        self.mode = check_choice("mode", mode, MODES)
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.align_corners = bool(align_corners)
        if localization is not None and not callable(localization):
            raise TypeError(f"localization must be a callable or None, got {type(localization).__name__}")
        self.transforms = nn.ModuleList(
            SpatialTransformer(
                None if localization is None else localization(),
                family,
                in_channels=self.channels + 1,
                in_size=self.in_size,
                loc_size=loc_size,
                align_corners=self.align_corners,
            )
            for _ in range(self.steps)
        )

    def check_inputs(self, foreground: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
        """``(foreground, background)`` checked against ``(B, C + 1, H, W)`` and ``(B, C, H, W)``; one-line ``ValueError``."""
        foreground = check_image("foreground", foreground)
        background = check_image("background", background)
        want = (self.channels + 1, *self.in_size)
        if tuple(foreground.shape[1:]) != want:
            raise ValueError(
                f"foreground must have shape (B, {', '.join(map(str, want))}), got {tuple(foreground.shape)}"
            )
        if tuple(background.shape) != (foreground.shape[0], self.channels, *self.in_size):
            raise ValueError(
                f"background must have shape ({foreground.shape[0]}, {self.channels}, {', '.join(map(str, self.in_size))}), "
                f"got {tuple(background.shape)}"
            )
        return foreground, background

    def warp_foreground(self, foreground: Tensor, params: Tensor) -> Tensor:
        """The original ``foreground`` sampled once with ``params`` (output -> foreground points)."""
        grid = self.family.grid(params, foreground.shape[2:], self.align_corners)
        return sample(foreground, grid, self.mode, self.padding_mode, self.align_corners)

    def composite(self, foreground: Tensor, background: Tensor, params: Tensor) -> Tensor:
        """The composite ``(B, C, H, W)`` of the foreground warped by ``params`` over the background."""
        return composite(self.warp_foreground(foreground, params), background)

    def update(self, k: int, foreground: Tensor, background: Tensor, params: Tensor | None) -> Tensor:
        """Step ``k``'s (0-based) update ``dp`` ``(B, num_params)`` from the composite under ``params``
        (``None``: the identity, the foreground as it is, not resampled)."""
        warped = foreground if params is None else self.warp_foreground(foreground, params)
        image = torch.cat([composite(warped, background), warped[:, self.channels :]], dim=1)
        return self.transforms[k].predict_params(image)

    def forward(
        self, foreground: Tensor, background: Tensor, init: Tensor | None = None, steps: int | None = None
    ) -> list[Tensor]:
        """The composed warp ``(B, num_params)`` after each of the first ``steps`` steps (all by default).

        ``init`` ``(B, num_params)`` is the foreground's initial warp ``p_0`` (where the foreground is
        placed before any step, e.g. a perturbed placement); ``None``: the identity. ``p_k`` composes
        the updates after it: ``p_0 o dp_1 o ... o dp_k``.
        """
        foreground, background = self.check_inputs(foreground, background)
        steps = self.steps if steps is None else check_int("steps", steps, high=self.steps)
        params = None if init is None else self.family.check_params(init, "init")
        if params is not None and params.shape[0] != foreground.shape[0]:
            raise ValueError(
                f"init must have shape ({foreground.shape[0]}, {self.family.num_params}), got {tuple(params.shape)}"
            )
        out = []
        for k in range(steps):
            dp = self.update(k, foreground, background, params)
            params = dp if params is None else self.family.compose(params, dp)
            out.append(params)
        return out

    def step_parameters(self, k: int) -> list[nn.Parameter]:
        """The trainable parameters of step ``k`` (0-based): train these with the others fixed."""
        check_int("k", k, low=0, high=self.steps - 1)
        return list(self.transforms[k].parameters())

    def extra_repr(self) -> str:
        return f"steps={self.steps}, transform={self.family.name!r}, in_size={self.in_size}"


class CompositeDiscriminator(nn.Module):
    """A small convolutional critic: an image ``(B, C, H, W)`` to one score per image ``(B,)``.

    Four 4x4 convolutions of stride 2 (``width``, 2, 4, 8 times ``width``
    channels), each followed by a leaky ReLU (slope 0.2), then a linear layer on the
    flattened map. No batch normalisation, so a gradient penalty (a per-sample
    gradient) stays well defined; ``spectral_norm=True`` normalises every layer's
    weight by its largest singular value (Miyato et al. 2018), which bounds the
    critic's Lipschitz constant without a penalty.

    Example:
        >>> d = CompositeDiscriminator(3, 64)
        >>> d(torch.rand(5, 3, 64, 64)).shape
        torch.Size([5])
    """

    def __init__(
        self, in_channels: int = 3, in_size: int | tuple[int, int] = 64, width: int = 16, spectral_norm: bool = False
    ):
        super().__init__()
        c = check_int("in_channels", in_channels)
        h, w = check_size("in_size", in_size)
        width = check_int("width", width)
        norm = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        for i in range(4):
            out = width * 2**i
            layers += [norm(nn.Conv2d(c, out, kernel_size=4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c, h, w = out, max(h // 2, 1), max(w // 2, 1)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.score = norm(nn.Linear(c * h * w, 1))
        self.in_size = check_size("in_size", in_size)

    def forward(self, x: Tensor) -> Tensor:
        x = check_image("x", x)
        if tuple(x.shape[2:]) != self.in_size:
            raise ValueError(f"x must have spatial size {self.in_size}, got {tuple(x.shape[2:])}")
        return self.score(self.features(x)).squeeze(1)


__all__ = ["CompositeDiscriminator", "IterativeWarpGenerator", "composite"]
