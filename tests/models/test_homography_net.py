"""HomographyNet (``homography-net``, ``homography-unsup``) and the homography task's losses."""

from __future__ import annotations

import pytest
import torch

from stnkit.data.homography import HomographyPatches, offsets_to_params
from stnkit.geometry import warp
from stnkit.models import HOMOGRAPHY_MODELS, REGISTRY, HomographyNet, create
from stnkit.train import TrainConfig
from stnkit.train.checkpoint import check_model_task
from stnkit.train.losses import corner_loss, mean_corner_error, photometric_loss
from stnkit.train.objectives import Homography, objective_for


def test_registered_with_their_losses():
    assert HOMOGRAPHY_MODELS == ("homography-net", "homography-unsup")
    net = objective_for(TrainConfig(model="homography-net", dataset="homography"))
    unsup = objective_for(TrainConfig(model="homography-unsup", dataset="homography"))
    assert isinstance(net, Homography) and net.loss is corner_loss and net.monitor == "error"
    assert isinstance(unsup, Homography) and unsup.loss is photometric_loss
    assert not isinstance(objective_for(TrainConfig(model="cnn", dataset="rts")), Homography)
    for name in HOMOGRAPHY_MODELS:
        assert REGISTRY[name].recipe["dataset"] == "homography"


@pytest.mark.parametrize("name", ["homography-net", "homography-unsup"])
def test_identity_at_initialisation(name):
    model = create(name, in_channels=2, in_size=128, num_classes=8)
    assert isinstance(model, HomographyNet)
    out = model(torch.rand(3, 2, 128, 128))
    assert out.shape == (3, 8) and torch.equal(out, torch.zeros(3, 8))


def test_outputs_move_once_trained_a_step():
    net = HomographyNet()
    x, y = torch.rand(4, 2, 128, 128), 10 * torch.randn(4, 8)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(2):  # the zero head gets a gradient first, then the layers before it
        opt.zero_grad()
        corner_loss(net(x), x, y)[0].backward()
        opt.step()
    assert net(x).abs().max() > 0


def test_standardised_input_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    net = HomographyNet(standardize=True)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x = torch.rand(2, 2, 128, 128)
    out = net(x)
    assert out.abs().max() > 0
    torch.testing.assert_close(net(0.3 * x + 0.5), out, atol=1e-3, rtol=1e-3)
    raw = HomographyNet(standardize=False)
    raw.load_state_dict(net.state_dict())
    assert (raw(0.3 * x + 0.5) - raw(x)).abs().max() > 1e-2


def test_bad_sizes():
    with pytest.raises(ValueError, match=r"in_size must be divisible by 32 \(2 \*\* len\(widths\)\), got \(100, 100\)"):
        HomographyNet(in_size=100)


def test_wrong_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2, 128, 128\) .*got shape \(2, 1, 128, 128\)"):
        HomographyNet()(torch.rand(2, 1, 128, 128))


def test_task_mismatch_is_refused():
    with pytest.raises(ValueError, match="model 'cnn' learns classification and dataset 'homography' is a homography"):
        check_model_task(TrainConfig(model="cnn", dataset="homography"))
    with pytest.raises(ValueError, match="model 'homography-net' learns homography and dataset 'rts' is a classif"):
        check_model_task(TrainConfig(model="homography-net", dataset="rts"))


def test_mean_corner_error_is_the_mean_distance():
    y = torch.zeros(2, 8)
    pred = torch.tensor([[3.0, 4.0] * 4, [0.0, 0.0] * 4])  # 5 px at every corner of the first, 0 of the second
    assert float(mean_corner_error(pred, y)) == pytest.approx(2.5)
    assert float(corner_loss(pred, None, y)[1]) == pytest.approx(2.5)


def test_photometric_loss_is_lowest_at_the_true_homography():
    pytest.importorskip("skimage")
    ds = HomographyPatches("train", 4, seed=0)
    x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(4)), strict=True))
    at_truth = photometric_loss(y, x, y)[0]
    at_identity = photometric_loss(torch.zeros_like(y), x, y)[0]
    assert at_truth < 0.1 * at_identity  # only bilinear resampling differs at the truth
    # the error it reports is the corner error, never part of its gradient
    off = torch.zeros_like(y, requires_grad=True)
    loss, err, _ = photometric_loss(off, x, y)
    loss.backward()
    assert off.grad.abs().sum() > 0 and float(err) == pytest.approx(float(mean_corner_error(torch.zeros_like(y), y)))


def test_photometric_loss_ignores_pixels_read_outside():
    x = torch.rand(1, 2, 128, 128)
    off = torch.full((1, 8), 20.0)  # reads 20 px right and down: a band outside P_A
    params = offsets_to_params(off)
    x[:, 1:] = warp(x[:, :1], params, "projective")  # P_B is P_A moved (zeros where it read outside)
    assert float(photometric_loss(off, x, torch.zeros(1, 8))[0]) < 1e-6
    assert set(Homography.LOSSES) == {"corners", "photometric"}


def _live_units_after_adam(net: HomographyNet, steps: int = 10) -> tuple[float, float]:
    """(the fraction of the hidden layer's units positive for at least one input, the outputs' spread
    over the inputs, px) after ``steps`` Adam steps at 1e-3 on 16 training pairs (batches of 8)."""
    ds = HomographyPatches("train", 16, seed=0)
    x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(16)), strict=True))
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(steps):
        b = slice(step % 2 * 8, step % 2 * 8 + 8)
        opt.zero_grad()
        corner_loss(net(x[b]), x[b], y[b])[0].backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        z = x
        if net.standardize:
            z = (x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + 1e-3)
        hidden = net.head[1](net.features(z).flatten(1))  # the 256 units before the nonlinearity
        return float((hidden > 0).any(0).float().mean()), float(net(x).std(0).mean())


def test_units_stay_alive_under_adam():
    pytest.importorskip("skimage")
    # the committed runs' failure: with ReLUs, the zero last layer and Adam most hidden units died
    # (zero for every input) and the net's output stopped depending on its input
    # (measured: 74 % of the units alive and 9.5 px of spread by default, 49 % with plain ReLUs on raw input)
    alive, spread = _live_units_after_adam(HomographyNet())
    assert alive > 0.6 and spread > 2.0
    dead, _ = _live_units_after_adam(HomographyNet(leak=0.0, standardize=False))
    assert dead < 0.6  # the check sees the ReLUs' dead units


@pytest.mark.parametrize("leak", [0.1, 0.0])
def test_a_unit_below_zero_for_every_input_still_learns(leak):
    torch.manual_seed(0)
    net = HomographyNet(leak=leak)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    with torch.no_grad():
        net.head[1].bias[0] = -1e4  # hidden unit 0 negative for any input: a dead ReLU
    x, y = torch.rand(4, 2, 128, 128), 10 * torch.randn(4, 8)
    corner_loss(net(x), x, y)[0].backward()
    grad = net.head[1].weight.grad[0].abs().sum()
    assert (grad > 0) if leak > 0 else (grad == 0)


def test_defaults_are_leaky_and_standardised():
    net = HomographyNet()
    assert net.standardize and net.leak == 0.1
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.1 for m in net.modules())
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in HomographyNet(leak=0.0).modules())
    with pytest.raises(ValueError, match=r"leak must be in \[0, 1\), got 1.0"):
        HomographyNet(leak=1.0)
    with pytest.raises(ValueError, match=r"leak must be a finite number in \[0.0, 1.0\], got -0.1"):
        HomographyNet(leak=-0.1)


def test_photometric_pyramid():
    pytest.importorskip("skimage")
    ds = HomographyPatches("train", 8, seed=0)
    x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(8)), strict=True))
    zero = torch.zeros_like(y)
    assert torch.equal(photometric_loss(zero, x, y, levels=1)[0], photometric_loss(zero, x, y)[0])
    # a 3-level pyramid is still lowest at the truth, and halfway there is lower than the identity
    at = {t: float(photometric_loss(t * y, x, y, levels=3)[0]) for t in (0.0, 0.5, 1.0)}
    assert at[1.0] < at[0.5] < at[0.0]
    with pytest.raises(ValueError, match=r"levels must leave at least 1 pixel of the \(128, 128\) patches, got 9"):
        photometric_loss(zero, x, y, levels=9)
    unsup = objective_for(TrainConfig(model="homography-unsup", dataset="homography", photometric_levels=3))
    assert unsup.loss.func is photometric_loss and unsup.loss.keywords == {"levels": 3, "standardize": False}


def test_standardised_photometric_loss_ignores_contrast():
    pytest.importorskip("skimage")
    ds = HomographyPatches("train", 4, seed=0)
    x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(4)), strict=True))
    off = 0.5 * y
    plain = photometric_loss(off, x, y)[0]
    assert not torch.allclose(photometric_loss(off, 0.5 * x + 0.3, y)[0], plain, rtol=1e-2)
    std = photometric_loss(off, x, y, standardize=True)[0]
    torch.testing.assert_close(
        photometric_loss(off, 0.5 * x + 0.3, y, standardize=True)[0], std, rtol=2e-2, atol=0
    )  # up to the std floor
    unsup = objective_for(TrainConfig(model="homography-unsup", dataset="homography", photometric_standardize=True))
    assert unsup.loss.keywords == {"levels": 1, "standardize": True}


def test_photometric_levels_option():
    with pytest.raises(ValueError, match=r"photometric_levels must be an int in \[1, 16\], got 0"):
        TrainConfig(photometric_levels=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "homography-net", "--photometric-levels", "3"], "--photometric-levels sets the photometric"),
        (["--model", "homography-unsup", "--photometric-levels", "0"], r"--photometric-levels must be an int in"),
        (["--model", "homography-net", "--photometric-standardize"], "--photometric-standardize sets the photometric"),
    ],
)
def test_photometric_levels_cli_errors_are_one_line(argv, message, tmp_path):
    from stnkit.cli import main

    with pytest.raises(SystemExit, match=message) as err:
        main(["train", *argv, "--out", str(tmp_path / "x")])
    assert "\n" not in str(err.value.code)
