"""stnkit.nn.compositing: the iterative warp generator, the discriminator, composite().

References are computed without stnkit's compose or grid: the homographies' 3x3 matrices written
out from the documented parameterisation (row-major, h33 = 1), multiplied in numpy, and the
sampling grid built by hand for F.grid_sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

from stnkit.nn import CompositeDiscriminator, IterativeWarpGenerator, composite


def _inputs(b=2, size=12, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(b, 1, size, size, generator=g, dtype=dtype)
    fg = torch.cat([torch.rand(b, 3, size, size, generator=g, dtype=dtype) * alpha, alpha], dim=1)
    bg = torch.rand(b, 3, size, size, generator=g, dtype=dtype)
    return fg, bg


def _set_constant_updates(gen: IterativeWarpGenerator, updates: list[np.ndarray]) -> None:
    """Zero head weights and a bias per step: step k predicts updates[k] whatever it reads."""
    with torch.no_grad():
        for t, u in zip(gen.transforms, updates):
            t.head.weight.zero_()
            t.head.bias.copy_(torch.as_tensor(u, dtype=t.head.bias.dtype))


def _matrix(h: np.ndarray) -> np.ndarray:
    return np.append(h, 1.0).reshape(3, 3)


def _reference_warp(fg: torch.Tensor, m: np.ndarray) -> torch.Tensor:
    """fg sampled at M @ (x, y, 1) / w for every output pixel centre (align_corners=False), by hand."""
    b, _, h, w = fg.shape
    xs = (2 * np.arange(w) + 1) / w - 1
    ys = (2 * np.arange(h) + 1) / h - 1
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy, np.ones_like(gx)], axis=-1) @ m.T
    grid = torch.as_tensor(pts[..., :2] / pts[..., 2:], dtype=fg.dtype)[None].expand(b, h, w, 2)
    return F.grid_sample(fg, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_identity_at_initialisation():
    gen = IterativeWarpGenerator(steps=3, in_size=12, loc_size=6)
    fg, bg = _inputs()
    params = gen(fg, bg)
    ident = gen.family.identity(2)
    assert len(params) == 3 and all(torch.equal(p, ident) for p in params)
    expected = fg[:, :3] + (1 - fg[:, 3:]) * bg
    assert torch.allclose(gen.composite(fg, bg, params[-1]), expected, atol=1e-5)


def test_composed_warp_is_the_product_of_the_step_matrices():
    gen = IterativeWarpGenerator(steps=3, in_size=12).double()
    rng = np.random.default_rng(0)
    updates = [np.array([1, 0, 0, 0, 1, 0, 0, 0], float) + rng.normal(0, 0.08, 8) for _ in range(3)]
    _set_constant_updates(gen, updates)
    fg, bg = _inputs(dtype=torch.float64)
    params = gen(fg, bg)
    product = np.eye(3)
    for k, u in enumerate(updates):
        product = product @ _matrix(u)  # p_k = p_{k-1} o dp_k: the update acts first
        m = product / product[2, 2]
        np.testing.assert_allclose(params[k][0].detach().numpy(), m.reshape(-1)[:8], atol=1e-10)
    out = gen.composite(fg, bg, params[-1])
    reference = composite(_reference_warp(fg, product / product[2, 2]), bg)
    assert torch.allclose(out, reference, atol=1e-10)


def test_an_initial_placement_starts_the_chain():
    gen = IterativeWarpGenerator(steps=2, in_size=12).double()
    rng = np.random.default_rng(2)
    init = np.array([1, 0, 0, 0, 1, 0, 0, 0], float) + rng.normal(0, 0.08, 8)
    updates = [np.array([1, 0, 0, 0, 1, 0, 0, 0], float) + rng.normal(0, 0.08, 8) for _ in range(2)]
    _set_constant_updates(gen, updates)
    fg, bg = _inputs(dtype=torch.float64)
    params = gen(fg, bg, init=torch.as_tensor(init)[None].expand(2, 8))
    product = _matrix(init) @ _matrix(updates[0]) @ _matrix(updates[1])
    np.testing.assert_allclose(params[-1][1].detach().numpy(), (product / product[2, 2]).reshape(-1)[:8], atol=1e-10)
    with pytest.raises(ValueError, match=r"init must have shape \(2, 8\), got \(1, 8\)"):
        gen(fg, bg, init=torch.as_tensor(init)[None])


def test_each_step_samples_the_original_foreground_once():
    """What step k's net reads is the original foreground sampled with p_{k-1}, not a resampled image."""
    gen = IterativeWarpGenerator(steps=2, in_size=12).double()
    rng = np.random.default_rng(1)
    updates = [np.array([1, 0, 0, 0, 1, 0, 0, 0], float) + rng.normal(0, 0.1, 8) for _ in range(2)]
    _set_constant_updates(gen, updates)
    seen = []
    gen.transforms[1].localization.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    fg, bg = _inputs(dtype=torch.float64)
    gen(fg, bg)
    warped = _reference_warp(fg, _matrix(updates[0]))
    expected = torch.cat([composite(warped, bg), warped[:, 3:]], dim=1)
    assert torch.allclose(seen[0], expected, atol=1e-10)


def test_gradcheck_float64_generator_step():
    torch.manual_seed(0)

    def loc():
        return nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 3), nn.Tanh())

    gen = IterativeWarpGenerator(steps=2, in_size=4, localization=loc).double()
    with torch.no_grad():
        for t in gen.transforms:
            t.head.weight.normal_(0, 0.05)
    fg, bg = _inputs(b=1, size=4, dtype=torch.float64)
    fg.requires_grad_(True)
    bg.requires_grad_(True)

    def fn(fg, bg):
        params = gen(fg, bg)
        return params[-1], gen.composite(fg, bg, params[-1])

    assert gradcheck(fn, (fg, bg))


def test_step_parameters_are_each_steps_own():
    gen = IterativeWarpGenerator(steps=2, in_size=8)
    first = {id(p) for p in gen.step_parameters(0)}
    second = {id(p) for p in gen.step_parameters(1)}
    assert first and second and not first & second
    assert first | second == {id(p) for p in gen.parameters()}
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 1\], got 2"):
        gen.step_parameters(2)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"transform": "tps"}, ValueError, "transform must be a 2-D matrix family .* got 'tps'"),
        ({"steps": 0}, ValueError, "steps must be a positive int, got 0"),
        ({"localization": 3}, TypeError, "localization must be a callable or None, got int"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        IterativeWarpGenerator(in_size=8, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_one_line():
    gen = IterativeWarpGenerator(steps=1, in_size=8)
    fg, bg = _inputs(size=8)
    with pytest.raises(ValueError, match=r"foreground must have shape \(B, 4, 8, 8\), got \(2, 3, 8, 8\)"):
        gen(fg[:, :3], bg)
    with pytest.raises(ValueError, match=r"background must have shape \(2, 3, 8, 8\), got \(1, 3, 8, 8\)"):
        gen(fg, bg[:1])
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 1\], got 2"):
        gen(fg, bg, steps=2)


def test_composite_is_over_with_premultiplied_colour():
    fg, bg = _inputs(size=5)
    out = composite(fg, bg)
    a = fg[:, 3:].numpy()
    np.testing.assert_allclose(out.numpy(), fg[:, :3].numpy() + (1 - a) * bg.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"foreground must have shape \(2, 4, H, W\)"):
        composite(fg[:, :3], bg)
    with pytest.raises(ValueError, match="foreground must have the background's size"):
        composite(fg, bg[:, :, :4])


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_scores_each_image(spectral_norm):
    d = CompositeDiscriminator(3, 32, width=4, spectral_norm=spectral_norm).eval()  # no power iteration
    x = torch.rand(3, 3, 32, 32)
    s = d(x)
    assert s.shape == (3,)
    assert torch.allclose(d(x[1:2]), s[1:2], atol=1e-5)  # per image, no batch statistics
    with pytest.raises(ValueError, match=r"x must have spatial size \(32, 32\), got \(16, 16\)"):
        d(torch.rand(1, 3, 16, 16))
