"""FieldNet: a U-Net from a (moving, fixed) pair to a dense field, zero at initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from stnkit.geometry import warp_field
from stnkit.nn import FieldNet

F64 = torch.float64
# the default 3-D net: encoder 880 + 13,856 + 27,680 + 27,680, decoder 55,328 + 55,328 + 20,752, head 1,299
DEFAULT_3D_PARAMS = 202_803


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def blob(size=16, cx=0.0, cy=0.0, sigma=0.35, dtype=torch.float32):
    """A smooth Gaussian blob (1, 1, size, size) centred at (cx, cy) in the normalised frame."""
    t = (torch.arange(size, dtype=dtype) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)).view(1, 1, size, size)


def perturb(net, std=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


@pytest.mark.parametrize(("dims", "shape"), [(2, (2, 1, 16, 16)), (3, (2, 1, 8, 8, 8))])
@pytest.mark.parametrize("out", ["dense", "velocity"])
def test_identity_at_initialisation(dims, shape, out):
    net = FieldNet(dims=dims, features=(4, 8, 8), out=out)
    moving, fixed = rand(*shape, seed=1), rand(*shape, seed=2)
    assert torch.equal(net(moving, fixed), torch.zeros(shape[0], dims, *shape[2:]))
    warped, field = net.warp(moving, fixed)
    assert torch.equal(field, torch.zeros_like(field))
    assert (warped - moving).abs().max() <= 1e-6


@pytest.mark.parametrize(("dims", "shape"), [(2, (3, 2, 16, 8)), (3, (1, 1, 8, 16, 8))])
def test_output_shape(dims, shape):
    in_channels = shape[1] + 1
    net = FieldNet(dims=dims, in_channels=in_channels, features=(4, 8, 8))
    perturb(net)
    moving, fixed = rand(*shape), rand(shape[0], 1, *shape[2:], seed=3)
    field = net(moving, fixed)
    assert field.shape == (shape[0], dims, *shape[2:]) and field.abs().max() > 0
    warped, field2 = net.warp(moving, fixed)
    assert warped.shape == moving.shape and torch.equal(field, field2)


def test_velocity_is_integrated():
    net = FieldNet(dims=2, features=(4, 8), out="velocity", steps=5)
    perturb(net, std=0.05)
    moving, fixed = rand(1, 1, 16, 16), rand(1, 1, 16, 16, seed=1)
    v = net(moving, fixed)
    u = net.displacement(moving, fixed)
    from stnkit.geometry import integrate_velocity

    assert torch.allclose(u, integrate_velocity(v, 5)) and not torch.allclose(u, v)


def test_gradients_reach_the_first_conv():
    net = FieldNet(dims=2, features=(4, 8, 8))
    moving, fixed = blob(cx=0.2), blob()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    F.mse_loss(net.warp(moving, fixed)[0], fixed).backward()
    first = net.encoder[0][0].weight
    # the zero head passes no gradient back at first, but gets one itself
    assert net.head.weight.grad.abs().max() > 0 and first.grad.abs().max() == 0
    opt.step()
    opt.zero_grad()
    F.mse_loss(net.warp(moving, fixed)[0], fixed).backward()
    assert first.grad.abs().max() > 0
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in net.parameters())


def test_a_few_adam_steps_register_a_translation():
    torch.manual_seed(0)
    net = FieldNet(dims=2, features=(8, 16, 16))
    fixed = blob(cx=0.0, cy=0.0)
    moving = blob(cx=0.25, cy=-0.125)  # fixed shifted by (2, -1) px: the field should be about (0.25, -0.125)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.mse_loss(net.warp(moving, fixed)[0], fixed)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        warped, field = net.warp(moving, fixed)
    final = F.mse_loss(warped, fixed).item()
    assert final <= losses[0] * 2 / 3, (losses[0], final)
    # where the blob is, the field points at the shift (0.223, -0.120 after 30 steps)
    centre = field[0, :, 6:10, 6:10].mean((1, 2))
    assert torch.allclose(centre, torch.tensor([0.25, -0.125]), atol=0.06), centre


def test_gradcheck_float64():
    net = FieldNet(dims=2, features=(2, 3), out="velocity", steps=2).to(F64)
    perturb(net, std=0.3)
    moving = rand(1, 1, 8, 8, dtype=F64).requires_grad_()
    fixed = rand(1, 1, 8, 8, seed=1, dtype=F64).requires_grad_()
    assert gradcheck(lambda m, f: net.displacement(m, f), (moving, fixed), eps=1e-6, atol=1e-5)
    weight = net.encoder[0][0].weight
    assert gradcheck(
        lambda w: torch.func.functional_call(net, {"encoder.0.0.weight": w}, (moving.detach(), fixed.detach())),
        (weight.detach().clone().requires_grad_(),),
        eps=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("moving", "fixed", "message"),
    [
        (rand(1, 1, 8, 8, 8), rand(1, 1, 8, 8, 8), r"moving must have shape \(B, C, H, W\) for a 2-D FieldNet"),
        (rand(1, 8, 8), rand(1, 8, 8), r"moving must have shape \(B, C, H, W\) or \(B, C, D, H, W\)"),
        (rand(1, 1, 8, 8), rand(1, 1, 8, 16), r"same batch and spatial size, got \(1, 1, 8, 8\) and \(1, 1, 8, 16\)"),
        (rand(2, 1, 8, 8), rand(1, 1, 8, 8), "same batch and spatial size"),
        (rand(1, 2, 8, 8), rand(1, 1, 8, 8), r"in_channels=2 channels together, got 2 \+ 1"),
        (rand(1, 1, 12, 8), rand(1, 1, 12, 8), r"divisible by 8 \(2 \*\* \(len\(features\) - 1\)\), got \(12, 8\)"),
    ],
)
def test_bad_input_is_refused_in_one_line(moving, fixed, message):
    net = FieldNet(dims=2, features=(2, 2, 2, 2))
    with pytest.raises(ValueError, match=message) as info:
        net(moving, fixed)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"dims": 4}, ValueError),
        ({"out": "affine"}, ValueError),
        ({"features": ()}, TypeError),
        ({"features": (4, 0)}, ValueError),
        ({"steps": -1}, ValueError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error):
    with pytest.raises(error) as info:
        FieldNet(**kwargs)
    assert "\n" not in str(info.value)


def test_default_parameter_count():
    net = FieldNet()
    assert sum(p.numel() for p in net.parameters()) == DEFAULT_3D_PARAMS
    assert str(DEFAULT_3D_PARAMS).replace("_", "") in (FieldNet.__doc__ or "").replace(",", "")
    assert net(rand(1, 1, 8, 8, 8), rand(1, 1, 8, 8, 8, seed=1)).shape == (1, 3, 8, 8, 8)


def test_warp_matches_warp_field():
    net = FieldNet(dims=2, features=(4, 8))
    perturb(net, std=0.05)
    moving, fixed = rand(1, 1, 8, 8), rand(1, 1, 8, 8, seed=1)
    warped, field = net.warp(moving, fixed)
    assert torch.allclose(warped, warp_field(moving, field))
