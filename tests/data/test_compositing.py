"""stnkit.data.CompositingScenes and placement_error: determinism, the recorded ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.data import CompositingScenes
from stnkit.data.compositing import placement_error
from stnkit.geometry import get_transform, warp

SIZE = 32


@pytest.fixture(scope="module")
def scenes():
    return CompositingScenes(4, seed=5, size=SIZE)


def test_deterministic_by_seed(scenes):
    again = CompositingScenes(4, seed=5, size=SIZE)
    other = CompositingScenes(4, seed=6, size=SIZE)
    for a, b in zip(scenes[1], again[1]):
        assert torch.equal(a, b)
    assert torch.equal(scenes.vertices, again.vertices) and torch.equal(scenes.perturbations, again.perturbations)
    assert not torch.equal(scenes.vertices, other.vertices)
    assert not torch.equal(scenes.background(1), other.background(1))


def test_images_are_in_range_and_premultiplied(scenes):
    fake, bg, fg = scenes[0]
    assert fake.shape == fg.shape == (4, SIZE, SIZE) and bg.shape == (3, SIZE, SIZE)
    assert bg.min() >= 0 and bg.max() <= 1 and fg[3].max() == 1.0 and fg[3].min() == 0.0
    assert bool((fg[:3] <= fg[3:] + 1e-6).all())  # colour times alpha never exceeds alpha
    real = scenes.real(0)
    assert torch.allclose(real, fg[:3] + (1 - fg[3:]) * bg)


def test_vertices_lie_on_the_rendered_box(scenes):
    for i in range(len(scenes)):
        alpha = scenes.foreground(i)[3]
        covered = F.max_pool2d(alpha[None, None], 3, stride=1, padding=1)[0, 0] > 0  # within a pixel of the box
        v = scenes.vertices[i].round().long()
        assert bool(covered[v[:, 1], v[:, 0]].all())
        x0, y0, x1, y1 = scenes.boxes[i]
        assert torch.allclose(scenes.vertices[i].min(0).values, torch.stack([x0, y0]))


def test_inverse_perturbation_restores_the_render(scenes):
    fam = get_transform("projective")
    for i in range(len(scenes)):
        fake, _, fg = scenes[i]
        back = warp(fake[None], fam.inverse(scenes.perturbations[i][None]), "projective")[0]
        # two bilinear resamplings: edges blur, so compare where the box is solid (alpha 1 a pixel around)
        solid = -F.max_pool2d(-fg[3][None, None], 3, stride=1, padding=1)[0, 0] > 0.999
        assert solid.sum() > 10
        assert (back - fg)[:, solid].abs().max() < 0.15
        assert (back - fg).abs().mean() < 0.012  # 0.003-0.008 here; warping by P instead gives > 0.02
        assert (fake - fg).abs().mean() > (back - fg).abs().mean()  # the perturbation itself moved the box


def _reference_error(h: np.ndarray, vertices: np.ndarray, size: int) -> float:
    """The vertices mapped by the inverse of H (pixel -> normalised -> H^-1 -> pixel), by hand."""
    m = np.linalg.inv(np.append(h, 1.0).reshape(3, 3))
    n = (2 * vertices + 1) / size - 1
    p = np.c_[n, np.ones(len(n))] @ m.T
    q = p[:, :2] / p[:, 2:]
    px = ((q + 1) * size - 1) / 2
    return float(np.linalg.norm(px - vertices, axis=1).mean())


def test_placement_error_against_a_reference(scenes):
    n = len(scenes)
    fam = get_transform("projective")
    before = placement_error(scenes.perturbations, scenes.vertices, SIZE)
    for i in range(n):
        ref = _reference_error(scenes.perturbations[i].double().numpy(), scenes.vertices[i].double().numpy(), SIZE)
        assert before[i].item() == pytest.approx(ref, rel=1e-4)
    assert bool((before > 0).all())
    p = scenes.perturbations.double()
    undone = placement_error(fam.compose(p, fam.inverse(p)), scenes.vertices, SIZE)
    assert undone.max() < 1e-6
    assert placement_error(fam.identity(n), scenes.vertices, SIZE).max() < 1e-6


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"n": 0}, "n must be a positive int, got 0"),
        ({"n": 2, "size": 8}, r"size must be an int >= 16, got 8"),
        ({"n": 2, "perturb": 0.9}, "perturb must be"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        CompositingScenes(**kwargs)
    assert "\n" not in str(info.value)


def test_fresh_perturbations_are_drawn_as_the_scenes_are():
    from stnkit.data.compositing import draw_perturbations
    from stnkit.geometry import Projective

    ds = CompositingScenes(300, seed=5, size=32, perturb=0.2)
    fresh = draw_perturbations(ds.boxes, 0.2, 32, torch.Generator().manual_seed(0))
    stored = placement_error(ds.perturbations, ds.vertices, 32).mean().item()
    drawn = placement_error(fresh, ds.vertices, 32)
    assert drawn.mean().item() == pytest.approx(stored, rel=0.12)  # the same distribution
    again = draw_perturbations(ds.boxes, 0.2, 32, torch.Generator().manual_seed(0))
    assert torch.equal(fresh, again) and not torch.allclose(fresh, ds.perturbations)
    zero = draw_perturbations(ds.boxes[:4], 0.0, 32)
    assert torch.allclose(zero, Projective().identity(4), atol=1e-5)
    # the moved corners: the box's bounding box corners read from at most 2 sd * side away
    assert (drawn < 2 * 0.2 * 2 * (ds.boxes[:, 2:] - ds.boxes[:, :2]).max(dim=1).values + 1e-3).all()
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, 4\), got torch.Size\(\[3\]\)"):
        draw_perturbations(torch.zeros(3), 0.2, 32)
