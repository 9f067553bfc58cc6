"""The inverse compositional STN (Lin and Lucey 2017): module, perturbed MNIST, model, reproduce target.

References are computed without stnkit's warps: homographies as 3x3 matrices
written out from the documented parameterisation, grids from ``F.affine_grid``,
sampling with ``F.grid_sample``, convexity by cross products.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

from stnkit.data import bundled_mnist, get_distortion
from stnkit.models import STClassifier, create
from stnkit.nn import InverseCompositionalTransformer

F64 = torch.float64
CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=F64)


def smooth_image(b: int = 2, size: int = 16, dtype=F64) -> torch.Tensor:
    """A smooth blob (bilinear sampling of it changes little, resampling twice blurs it measurably)."""
    g = torch.linspace(-1, 1, size, dtype=dtype)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    img = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.15) + 0.5 * (xx > 0.3).to(dtype) * (yy < 0).to(dtype)
    return img.expand(b, 1, size, size).clone()


def affine_matrix(p: torch.Tensor) -> torch.Tensor:
    """The 3x3 matrix of affine parameters ``(a, b, c, d, e, f)``, written out."""
    m = torch.zeros(p.shape[0], 3, 3, dtype=p.dtype)
    m[:, 0] = p[:, 0:3]
    m[:, 1] = p[:, 3:6]
    m[:, 2, 2] = 1.0
    return m


def reference_sample(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(m[:, :2], list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def constant_update(ic: InverseCompositionalTransformer, update: torch.Tensor) -> None:
    """Make every step predict ``update`` whatever it sees (zero head weights, bias = update)."""
    with torch.no_grad():
        ic.head.weight.zero_()
        ic.head.bias.copy_(update)


def tiny_ic(steps: int, transform: str = "affine", size: int = 16, dtype=F64) -> InverseCompositionalTransformer:
    loc = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 6), nn.Tanh())
    return InverseCompositionalTransformer(loc, transform, steps=steps, in_channels=1, in_size=size).to(dtype)


# -- the module ----------------------------------------------------------------------------------
@pytest.mark.parametrize("transform", ["projective", "affine", "similarity"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_identity_at_initialisation(transform, steps):
    torch.manual_seed(0)
    ic = InverseCompositionalTransformer(transform=transform, steps=steps, in_channels=1, in_size=12).double()
    x = torch.rand(3, 1, 12, 12, dtype=F64)
    y, params = ic(x, return_params=True)
    assert torch.allclose(y, x, atol=1e-12)
    ident = ic.family.identity(3, dtype=F64)
    assert all(torch.equal(p, ident) for p in ic.step_params(x))
    assert torch.equal(params, ident)


def test_gradcheck_float64_through_the_recurrence():
    torch.manual_seed(0)
    ic = tiny_ic(steps=3, size=6)
    x = torch.rand(2, 1, 6, 6, dtype=F64)
    w = 0.05 * torch.randn_like(ic.head.weight)  # away from the identity, so each step warps
    b = ic.head.bias.detach().clone() + 0.05 * torch.randn_like(ic.head.bias)

    def f(x, w, b):
        return torch.func.functional_call(ic, {"head.weight": w, "head.bias": b}, (x,))

    assert gradcheck(f, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()), atol=1e-6)


UPDATE = torch.tensor([0.9, -0.15, 0.08, 0.12, 0.85, -0.05], dtype=F64)  # zoom, rotate a little, shift


@pytest.mark.parametrize("steps", [2, 4])
def test_output_samples_the_input_once_with_the_composed_warp(steps):
    ic = tiny_ic(steps)
    constant_update(ic, UPDATE)
    x = smooth_image()
    seen = []
    ic.localization.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    y, params = ic(x, return_params=True)
    m = affine_matrix(UPDATE[None]).expand(2, 3, 3)
    composed = torch.linalg.matrix_power(m, steps)
    # the composed warp, and the output: the input sampled once with it
    assert torch.allclose(affine_matrix(params), composed, atol=1e-12)
    assert torch.allclose(y, reference_sample(x, composed), atol=1e-10)
    # step k's localisation net sees the input sampled once with the warp composed over the k steps before
    assert len(seen) == steps
    assert torch.equal(seen[0], x)
    for k in range(1, steps):
        assert torch.allclose(
            seen[k].view(2, 1, 16, 16), reference_sample(x, torch.linalg.matrix_power(m, k)), atol=1e-10
        )
    # warping the warped image again (an STN stack) blurs and crops: measurably different
    again = x
    for _ in range(steps):
        again = reference_sample(again, m)
    assert (again - y).abs().mean() > 5e-3  # measured 0.010 (2 steps)


def test_update_acts_first_then_the_current_warp():
    # p_k = compose(p_{k-1}, dp): matrix(p_{k-1}) @ matrix(dp); with two different updates the order shows
    ic = tiny_ic(2)
    updates = iter([torch.tensor([[1.0, 0.0, 0.3, 0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])])
    ic.predict_params = lambda x: next(updates).to(F64).expand(x.shape[0], 6)
    params = ic.step_params(smooth_image())[-1]
    expected = affine_matrix(torch.tensor([[1.0, 0.0, 0.3, 0.0, 1.0, 0.0]], dtype=F64)) @ affine_matrix(
        torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]], dtype=F64)
    )
    assert torch.allclose(affine_matrix(params), expected.expand(2, 3, 3))  # T(p) = 0.5 p + (0.3, 0)


def test_exceptions():
    with pytest.raises(ValueError, match=r"^transform must be a matrix family .* got 'tps'$"):
        InverseCompositionalTransformer(transform="tps", in_channels=1, in_size=8)
    with pytest.raises(ValueError, match="^steps must be"):
        InverseCompositionalTransformer(steps=0, in_channels=1, in_size=8)
    with pytest.raises(TypeError, match="^steps must be an int, got str"):
        InverseCompositionalTransformer(steps="2", in_channels=1, in_size=8)
    ic = InverseCompositionalTransformer(in_channels=1, in_size=8)
    with pytest.raises(ValueError, match=r"^x must have shape \(B, 1, 8, 8\)"):
        ic(torch.rand(1, 1, 9, 9))


def test_out_size_and_loc_size():
    ic = InverseCompositionalTransformer(steps=2, in_channels=1, in_size=16, out_size=8, loc_size=8)
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(ic(x), F.avg_pool2d(x, 2), atol=1e-6)  # identity at init, half size


# -- perturbed MNIST -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    images, _ = bundled_mnist()
    return torch.from_numpy(images[:64].astype(np.float32) / 255.0).unsqueeze(1)


def is_convex(q: torch.Tensor) -> torch.Tensor:
    e = q.roll(-1, 1) - q
    cross = e[..., 0] * e.roll(-1, 1)[..., 1] - e[..., 1] * e.roll(-1, 1)[..., 0]
    return (cross > 0).all(1)


def test_perturbed_is_deterministic_by_seed(digits):
    dist = get_distortion("perturbed")
    a = dist(digits, torch.Generator().manual_seed(3))
    b = dist(digits, torch.Generator().manual_seed(3))
    c = dist(digits, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert dist.recipe()["options"] == {"sigma": 0.25, "translation": 0.25}


@pytest.mark.parametrize("sigma, translation", [(0.25, 0.25), (0.1, 0.4)])
def test_perturbed_homography_maps_corners_to_the_drawn_corners(digits, sigma, translation):
    n = digits.shape[0]
    dist = get_distortion("perturbed", sigma=sigma, translation=translation)
    _, params = dist(digits, torch.Generator().manual_seed(0))
    # the documented draw, redone: t (N, 2), then the corner noise (N, 4, 2)
    g = torch.Generator().manual_seed(0)
    t = torch.randn((n, 2), generator=g, dtype=F64) * translation
    noise = torch.randn((n, 4, 2), generator=g, dtype=F64) * sigma
    expected = CORNERS + noise + t[:, None, :]
    first_draw_kept = is_convex(CORNERS + noise)
    assert first_draw_kept.float().mean() > 0.9  # at most a few redraws
    h = torch.cat([params.double(), torch.ones(n, 1, dtype=F64)], 1).view(n, 3, 3)
    homog = torch.cat([CORNERS, torch.ones(4, 1, dtype=F64)], 1)  # (4, 3)
    mapped = homog @ h.transpose(1, 2)
    mapped = mapped[..., :2] / mapped[..., 2:]
    assert torch.allclose(mapped[first_draw_kept], expected[first_draw_kept], atol=1e-4)
    assert is_convex(mapped).all()  # redrawn corners are convex too
    # the spread of the moved corners is the sigma asked for (each corner's own noise plus the shared shift)
    d = (mapped - CORNERS).reshape(-1)
    assert abs(float(d.std()) - (sigma**2 + translation**2) ** 0.5) < 0.1


def test_perturbed_options(digits):
    _, params = get_distortion("perturbed", sigma=0.0, translation=0.0)(digits[:4], torch.Generator().manual_seed(0))
    assert torch.allclose(params, get_distortion("perturbed").family.identity(4), atol=1e-6)
    with pytest.raises(ValueError, match="^sigma must be"):
        get_distortion("perturbed", sigma=-0.1)
    with pytest.raises(TypeError, match="unknown option"):
        get_distortion("perturbed", scale=(0.5, 1.0))


# -- the model and its options ----------------------------------------------------------------------
def test_ic_stn_model():
    from stnkit.train.checkpoint import build_model
    from stnkit.train.config import TrainConfig

    model = create("ic-stn", ic_steps=2, loc_downsample=2)
    assert isinstance(model, STClassifier) and model.transformer.steps == 2
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(model.transformer(x), x, atol=1e-5)
    assert model(x).shape == (2, 10)
    config = TrainConfig.for_model("ic-stn", dataset="perturbed", ic_steps=1)
    assert config.transform == "projective"  # the model's recipe
    assert build_model(config).transformer.steps == 1
    with pytest.raises(ValueError, match="^ic_steps must be"):
        TrainConfig(ic_steps=0)
    with pytest.raises(ValueError, match="transform must not be 'tps'"):
        create("ic-stn", transform="tps")
    with pytest.raises(ValueError, match="one .recurrent. transformer"):
        create("ic-stn", num_transformers=2)


# -- stnkit reproduce icstn ------------------------------------------------------------------------
pytest.importorskip("lightning")
TINY = ["--train-size", "64", "--val-size", "32", "--test-size", "32", "--batch-size", "32", "--epochs", "1"]


def test_reproduce_icstn_tiny_grid_resumes(tmp_path, capsys):
    from stnkit.cli import main

    out = tmp_path / "results"
    args = ["reproduce", "icstn", "--out", str(out), "--models", "cnn,ic-stn-2", *TINY]
    assert main(args) == 0
    summary = json.loads((out / "icstn.json").read_text())
    assert summary["cells_done"] == 2 and summary["cells_planned"] == 5
    assert set(summary["table"]) == {"cnn", "ic-stn-2"}
    cfg = json.loads((out / "runs" / "perturbed" / "ic-stn-2" / "seed0" / "results.json").read_text())["config"]
    assert (cfg["model"], cfg["transform"], cfg["ic_steps"], cfg["dataset"]) == ("ic-stn", "projective", 2, "perturbed")
    md = (out / "icstn.md").read_text()
    assert "| IC-STN-2 | **" in md and "| IC-STN-4 | – |" in md
    # a finished cell is never trained twice
    results = out / "runs" / "perturbed" / "cnn" / "seed0" / "results.json"
    before = results.stat().st_mtime_ns
    assert main(args) == 0
    assert results.stat().st_mtime_ns == before
    # nor mixed with other settings
    capsys.readouterr()
    assert main([*args[:-2], "--epochs", "2"]) == 1
    assert "epochs: 1 in the checkpoint, 2 now" in capsys.readouterr().err
    assert main(["reproduce", "icstn", "--out", str(out), "--dry-run", "--seeds", "2", "--models", "ic-stn-4"]) == 0
    assert capsys.readouterr().out.split() == ["perturbed/ic-stn-4/seed0", "perturbed/ic-stn-4/seed1"]


def test_reproduce_icstn_figure(tmp_path):
    from stnkit_experiments import icstn

    out = tmp_path / "results"
    base = icstn.TrainConfig(train_size=64, val_size=32, test_size=32, batch_size=32, epochs=1)
    icstn.run_icstn(out, base, icstn.cells(["ic-stn-4"], 1), seeds=1)
    assert icstn.make_figure(out, n=3) == out / "figures" / "icstn_steps.png"
    assert (out / "figures" / "icstn_steps.png").stat().st_size > 1000


def test_reproduce_icstn_interrupted_cell_resumes(tmp_path, monkeypatch):
    from stnkit.train.module import STNModule
    from stnkit_experiments import icstn

    out = tmp_path / "results"
    cell = icstn.Cell("cnn", 0)
    base = icstn.TrainConfig(train_size=64, val_size=32, test_size=32, batch_size=32, epochs=2)
    run_dir = out / "runs" / cell.dirname

    def crash_in_second_epoch(self):
        if self.current_epoch == 1:
            raise RuntimeError("simulated interruption")

    monkeypatch.setattr(STNModule, "on_train_epoch_start", crash_in_second_epoch, raising=False)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        icstn.run_icstn(out, base, [cell], seeds=1)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "results.json").exists()
    monkeypatch.undo()
    assert icstn.run_icstn(out, base, [cell], seeds=1)["cells_done"] == 1
    second = sorted((run_dir / "logs").glob("version_*"))[-1] / "metrics.csv"
    assert {int(r["epoch"]) for r in csv.DictReader(second.open()) if r.get("val_error")} == {1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "icstn", "--ic-steps", "2"], "--ic-steps is set by each icstn row"),
        (["reproduce", "icstn", "--models", "ic-stn-3"], "unknown icstn row 'ic-stn-3'"),
        (["reproduce", "icstn", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["train", "--model", "cnn", "--ic-steps", "2"], "--ic-steps sets the IC-STN's recurrent warps"),
        (["train", "--model", "ic-stn", "--transform", "tps"], "--transform must not be tps"),
        (["train", "--model", "ic-stn", "--ic-steps", "0"], r"--ic-steps must be an int in \[1, 64\], got 0"),
    ],
)
def test_cli_errors_are_one_line(argv, message, tmp_path):
    from stnkit.cli import main

    with pytest.raises(SystemExit, match=message) as err:
        main([*argv, "--out", str(tmp_path / "x")])
    assert "\n" not in str(err.value.code)
