"""stnkit.data.parts: the two-part scenes: deterministic by seed, labels from the parts, tight boxes."""

import pytest
import torch

from stnkit.data import PartsScenes
from stnkit.data.parts import GLYPHS, GLYPHS_B, NUM_PART_CLASSES, _glyph_mask


def test_scenes_are_deterministic_by_seed_and_differ_across_seeds():
    a, b, c = PartsScenes(6, seed=3), PartsScenes(6, seed=3), PartsScenes(6, seed=4)
    for i in range(6):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert torch.equal(a.boxes, b.boxes)
    assert not torch.equal(torch.stack([a[i][0] for i in range(6)]), torch.stack([c[i][0] for i in range(6)]))
    assert torch.equal(a[2][0], a[2][0])  # rendering twice gives the same pixels


def test_scene_shape_range_and_label_is_the_pair_of_parts():
    ds = PartsScenes(32, seed=0)
    x, y = ds[5]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(ds.labels, ds.kinds[:, 0] * len(GLYPHS_B) + ds.kinds[:, 1])
    assert int(ds.labels.max()) < NUM_PART_CLASSES and y.dtype == torch.int64


@pytest.mark.parametrize("clutter", [False, True])
def test_each_part_paints_only_inside_its_box_and_touches_every_edge(clutter):
    ds = PartsScenes(12, seed=1, clutter=clutter)
    for i in range(12):
        for k, other in ((0, 1), (1, 0)):
            without = ds.render(i, parts=(other,))
            with_part = ds.render(i, parts=(0, 1))
            changed = (with_part - without).abs().amax(0) > 0  # the pixels this part paints
            ys, xs = torch.nonzero(changed, as_tuple=True)
            x0, y0, x1, y1 = ds.boxes[i, k].tolist()
            assert xs.numel() > 20
            assert x0 <= xs.min() and xs.max() + 1 <= x1 and y0 <= ys.min() and ys.max() + 1 <= y1
            if not clutter:  # tight: on black, every painted pixel changes, and they reach each edge of the box
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_boxes_stay_on_canvas_and_the_parts_do_not_overlap():
    ds = PartsScenes(200, seed=2)
    b = ds.boxes
    assert (b[..., :2] >= 0).all() and (b[..., 2:] <= 128).all()
    ix = (torch.minimum(b[:, 0, 2], b[:, 1, 2]) - torch.maximum(b[:, 0, 0], b[:, 1, 0])).clamp(min=0)
    iy = (torch.minimum(b[:, 0, 3], b[:, 1, 3]) - torch.maximum(b[:, 0, 1], b[:, 1, 1])).clamp(min=0)
    assert float((ix * iy).max()) == 0.0
    side = (b[..., 2] - b[..., 0]).clamp(min=b[..., 3] - b[..., 1])  # the larger side of each box
    assert float(side.min()) >= 0.16 * 128 * 0.7 and float(side.max()) <= 0.22 * 128 * 1.45


def test_glyphs_are_distinct_under_every_rotation():
    # each glyph's mask, rotated by multiples of 90 degrees and mirrored, differs from every other glyph's
    masks = {g: torch.from_numpy(_glyph_mask(g, 32)) > 0.5 for g in GLYPHS}
    for g, m in masks.items():
        for h, n in masks.items():
            if g != h:
                variants = [torch.rot90(v, r) for v in (n, n.flip(1)) for r in range(4)]
                assert all((m ^ v).float().mean() > 0.05 for v in variants), (g, h)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^canvas_size must be an int >= 64, got 32$"):
        PartsScenes(2, canvas_size=32)
    with pytest.raises(TypeError, match=r"^clutter must be a bool, got int$"):
        PartsScenes(2, clutter=1)
    with pytest.raises(ValueError, match=r"^n must be a positive int, got 0$"):
        PartsScenes(0)
