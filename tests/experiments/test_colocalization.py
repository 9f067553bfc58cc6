"""Co-localisation (Jaderberg et al. 2015, appendix A.2): data, boxes, IoU, loss, training, command line."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.cli import main
from stnkit.data import CoLocalization
from stnkit.geometry import attention_box, attention_from_box, box_iou, get_transform, warp
from stnkit_experiments import colocalization as co


def _digits(n_per_class=6, seed=0):
    """Synthetic 28x28 digits: a random blob of ink in the central 20x20, labels 0..9 in turn."""
    g = np.random.default_rng(seed)
    images = np.zeros((10 * n_per_class, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = g.integers(0, 256, (10 * n_per_class, 20, 20))
    images[:, 4:24, 4:24] *= g.random((10 * n_per_class, 20, 20)) < 0.3
    images[:, 4, 4] = 255  # ink at the frame's corners of the inked area, so its extent is known
    images[:, 23, 23] = 255
    return images, np.arange(10 * n_per_class) % 10


class TestCoLocalization:
    def test_deterministic_by_seed(self):
        im, lb = _digits()
        a = CoLocalization(im, lb, 3, "cluttered", n=5, seed=1)
        b = CoLocalization(im, lb, 3, "cluttered", n=5, seed=1)
        c = CoLocalization(im, lb, 3, "cluttered", n=5, seed=2)
        assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
        assert not torch.equal(a.images, c.images)
        assert a.images.shape == (5, 1, 84, 84) and a.boxes.shape == (5, 4)

    def test_only_the_class(self):
        im, lb = _digits()
        ds = CoLocalization(im, lb, 7, n=6)
        assert (torch.as_tensor(lb)[ds.index] == 7).all()

    @pytest.mark.parametrize("kind", ["plain", "cluttered"])
    def test_boxes_hold_the_digit(self, kind):
        im, lb = _digits()
        ds = CoLocalization(im, lb, 2, kind, n=6, seed=3)
        for i in range(6):
            x0, y0, x1, y1 = (int(v) for v in ds.boxes[i])
            assert x1 - x0 == 28 and y1 - y0 == 28 and float(ds.boxes[i, 0]) == x0
            inside = ds.images[i, 0, y0:y1, x0:x1]
            # the digit's pixels, exactly, under any clutter (pasted with max)
            assert (inside >= ds.digits[i, 0] - 1e-6).all()
            if kind == "plain":
                assert torch.equal(inside, ds.digits[i, 0])
                ink = torch.nonzero(ds.images[i, 0])  # rows, cols of all ink on the canvas
                assert ink[:, 0].min() == y0 + 4 and ink[:, 1].min() == x0 + 4
                assert ink[:, 0].max() == y0 + 23 and ink[:, 1].max() == x0 + 23

    def test_clutter_only_in_cluttered(self):
        im, lb = _digits()
        plain = CoLocalization(im, lb, 2, "plain", n=6, seed=0)
        clut = CoLocalization(im, lb, 2, "cluttered", n=6, seed=0)
        assert torch.equal(plain.boxes, clut.boxes)  # same positions
        assert clut.images.sum() > plain.images.sum()

    def test_bad_options(self):
        im, lb = _digits()
        with pytest.raises(ValueError, match="kind"):
            CoLocalization(im, lb, 2, "noisy", n=2)
        with pytest.raises(ValueError, match="n must be at most"):
            CoLocalization(im, lb, 2, n=7)
        with pytest.raises(ValueError, match="digit"):
            CoLocalization(im, lb, 10, n=1)


class TestBoxes:
    def test_iou_hand_computed(self):
        a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 4.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
        b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
        expected = torch.tensor([1 / 7, 0.0, 0.5, 0.0])
        assert torch.allclose(box_iou(a, b), expected)
        assert torch.allclose(box_iou(a[:3], a[:3]), torch.ones(3))

    def test_identity_is_the_whole_image(self):
        box = attention_box(get_transform("attention").identity(1), (84, 60))
        assert torch.equal(box, torch.tensor([[0.0, 0.0, 60.0, 84.0]]))

    @pytest.mark.parametrize("x0,y0", [(0, 0), (13, 40), (56, 56)])
    def test_box_agrees_with_the_sampler(self, x0, y0):
        """The 28x28 crop of params for an integer box is the canvas's pixels inside that box."""
        canvas = torch.rand(1, 1, 84, 84)
        box = torch.tensor([[x0, y0, x0 + 28, y0 + 28]], dtype=torch.float64)
        params = attention_from_box(box, 84)
        assert torch.allclose(attention_box(params, 84), box)
        crop = warp(canvas, params.float(), "attention", out_size=28)
        assert torch.allclose(crop[0, 0], canvas[0, 0, y0 : y0 + 28, x0 : x0 + 28], atol=1e-5)

    def test_box_agrees_with_the_sampler_align_corners(self):
        """align_corners=True: a box of 28 pixels (edge to edge) starting at pixel 10 reads pixels 10..37."""
        canvas = torch.rand(1, 1, 84, 84)
        box = torch.tensor([[10.0, 20.0, 38.0, 48.0]], dtype=torch.float64)
        params = attention_from_box(box, 84, out_size=28, align_corners=True)
        assert torch.allclose(attention_box(params, 84, out_size=28, align_corners=True), box)
        grid = get_transform("attention").grid(params.float(), (28, 28), align_corners=True)
        crop = F.grid_sample(canvas, grid, align_corners=True)
        assert torch.allclose(crop[0, 0], canvas[0, 0, 20:48, 10:38], atol=1e-5)

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"params must have shape \(B, 3\)"):
            attention_box(torch.zeros(2, 4), 84)
        with pytest.raises(ValueError, match="out_size is needed"):
            attention_box(torch.zeros(2, 3), 84, align_corners=True)
        with pytest.raises(TypeError, match="floating"):
            box_iou(torch.zeros(1, 4, dtype=torch.int64), torch.zeros(1, 4, dtype=torch.int64))


def test_triplet_loss_direct_formula():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    expected = []
    for i in range(5):
        dp = sum((a[i, k] - p[i, k]) ** 2 for k in range(3))
        dn = sum((a[i, k] - n[i, k]) ** 2 for k in range(3))
        expected.append(max(0.0, float(dp - dn + 1.0)))
    assert co.triplet_hinge_loss(a, p, n, 1.0).item() == pytest.approx(sum(expected) / 5)
    assert co.triplet_hinge_loss(a, a, a + 10.0, 1.0).item() == 0.0


def test_transformer_is_the_identity_at_init():
    torch.manual_seed(0)
    for bounded in (False, True):
        st = co.coloc_transformer(bounded)
        x = torch.rand(3, 1, 84, 84)
        p = st.predict_params(x)
        assert torch.allclose(p, torch.tensor([[1.0, 0.0, 0.0]]).expand(3, 3))
        assert torch.equal(co.predicted_boxes(st, x), torch.tensor([[0.0, 0.0, 84.0, 84.0]]).expand(3, 4))
        assert st(x).shape == (3, 1, 28, 28)


def test_encoder_descriptor_is_three_layers():
    torch.manual_seed(0)
    from stnkit.models import CNN

    cnn = CNN(1, 28).eval()
    x = torch.rand(2, 1, 28, 28)
    d = co.DigitEncoder(cnn)(x)
    assert d.shape == (2, 32 * 14 * 14 + 32 * 7 * 7 + 10)
    assert torch.allclose(d[:, -10:], cnn(x))  # the logits, without softmax


def _train(tmp_path, name, **kw):
    im, lb = _digits(4)
    torch.manual_seed(0)
    from stnkit.models import CNN

    enc = CNN(1, 28).eval()
    config = co.ColocConfig(
        **{"digit": 1, "kind": "cluttered", "n": 4, "test_n": 2, "epochs": 2, "batch_size": 2, **kw}
    )
    return co.train_colocalization(config, tmp_path / name, enc, (im, lb), (im, lb))


def _train_stopped_at_first_save(monkeypatch, tmp_path, name, **kw):
    """``_train`` interrupted (KeyboardInterrupt) right after its first saved state, as a Ctrl-C would."""
    real = co._save_state

    def stop(path, st, opt, epoch, *args):
        real(path, st, opt, epoch, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(co, "_save_state", stop)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, name, **kw)
    monkeypatch.setattr(co, "_save_state", real)


def test_tiny_training_is_deterministic_and_resumable(tmp_path, monkeypatch):
    one_go = _train(tmp_path, "one_go")
    assert set(one_go) >= {"train", "held_out", "losses"} and len(one_go["losses"]) == 2
    assert 0.0 <= one_go["train"]["correct_percent"] <= 100.0
    # interrupted after the first epoch, then run again: the same result as in one go (Adam's state restored)
    _train_stopped_at_first_save(monkeypatch, tmp_path, "resumed")
    resumed = _train(tmp_path, "resumed")
    assert resumed["losses"] == one_go["losses"] and resumed["train"] == one_go["train"]
    wa = co.load_transformer(tmp_path / "one_go" / "model.safetensors").state_dict()
    wb = co.load_transformer(tmp_path / "resumed" / "model.safetensors").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a checkpoint of other settings is refused, not mixed in
    (tmp_path / "resumed" / "results.json").unlink()
    with pytest.raises(ValueError, match="other settings"):
        _train(tmp_path, "resumed", lr=0.5)
    # and so is one of the random streams of an older stnkit
    last = tmp_path / "resumed" / "last.safetensors"
    tensors, meta = co.load_tensors(last)
    co.save_tensors(last, tensors, {k: v for k, v in meta.items() if k != "streams"})
    with pytest.raises(ValueError, match="random streams of an older stnkit"):
        _train(tmp_path, "resumed")


def test_summary_and_markdown(tmp_path):
    run = co.run_dir_of(tmp_path, "plain", 3, 0)
    run.mkdir(parents=True)
    result = {
        "config": co.ColocConfig(digit=3).to_dict(),
        "train": {"correct_percent": 80.0, "mean_iou": 0.6, "n": 100},
        "held_out": {"correct_percent": 70.0, "mean_iou": 0.55, "n": 100},
        "loss_at": {"truth": 1.0, "identity": 2.0, "trained": 0.5},
        "start": {"correct_percent": 6.0, "mean_iou": 0.2, "n": 100},
    }
    (run / "results.json").write_text(json.dumps(result))
    summary = co.summarize_colocalization(tmp_path)
    assert summary["runs_done"] == 1 and summary["table"]["plain"]["3"]["train"] == 80.0
    md = co.render_markdown(summary)
    assert "| plain | – | – | – | 80 (70) |" in md and "| 80.0 (70.0) | 100 |" in md and "75-93" in md
    assert "e() concat (the paper" in md and "start window scale 1.0" in md
    assert "never moves" in md and "plain 6.0 %" in md
    assert "window search alone" not in md
    assert "window search rounds (0: none) 0; bounded" in md  # without a search, its knobs are not listed
    result["search"] = {"windows": {"correct_percent": 90.0, "mean_iou": 0.7, "n": 100}}
    (run / "results.json").write_text(json.dumps(result))
    md = co.render_markdown(co.summarize_colocalization(tmp_path))
    assert "window search alone (its windows on the same canvases, before the localisation net is fitted" in md
    assert "runs): plain 90.0 %." in md
    result["config"] = co.ColocConfig(digit=3, search_rounds=2, epochs=0).to_dict()
    (run / "results.json").write_text(json.dumps(result))
    md = co.render_markdown(co.summarize_colocalization(tmp_path))
    assert "window search rounds (0: none) 2; search stride px 4; net fitted" in md
    assert "Per seed" not in md  # one seed
    run1 = co.run_dir_of(tmp_path, "plain", 3, 1)
    run1.mkdir(parents=True)
    (run1 / "results.json").write_text(json.dumps({**result, "train": {**result["train"], "correct_percent": 60.0}}))
    md = co.render_markdown(co.summarize_colocalization(tmp_path, seeds=2))
    assert "Per seed (0, 1; mean over classes): plain 80.0 / 60.0 %." in md


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--kinds", "noisy"], "--kinds must be from plain, cluttered"),
        (["--classes", "3,11"], "--classes must be digits 0-9"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--coloc-epochs", "-1"], "--coloc-epochs must be >= 0"),  # the default recipe searches: 0 epochs allowed
        (["--coloc-recipe", "paper", "--coloc-epochs", "0"], "--coloc-epochs must be >= 1"),
        (["--coloc-descriptor", "pixels"], "--coloc-descriptor must be one of concat"),
        (["--coloc-rand-patch", "big"], "--coloc-rand-patch must be one of fixed, same"),
        (["--coloc-init-scale", "2"], "--coloc-init-scale must be in (0, 2)"),
        (["--coloc-scale-range", "0.5,0.2", "--coloc-init-scale", "0.3"], "--coloc-scale-range must have low <= high"),
        (["--coloc-scale-range", "0.4,0.5"], "--coloc-init-scale must be in (0.4, 0.5) when scale_range is set"),
        (["--coloc-outside-weight", "-1"], "--coloc-outside-weight must be a finite number in [0.0, inf]"),
        (["--coloc-split", "train"], "--coloc-split must be one of 'val', 'test'"),
        (["--coloc-recipe", "best"], "--coloc-recipe must be one of paper"),
    ],
)
def test_cli_bad_options_are_one_line(tmp_path, capsys, argv, pattern):
    try:
        code = main(["reproduce", "colocalization", "--out", str(tmp_path / "out"), *argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    text = err if err else str(code)
    assert code != 0 and pattern in text and text.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_random_patches():
    canvas = torch.rand(3, 1, 84, 84)
    g = torch.Generator().manual_seed(0)
    fixed = co.random_patches(canvas, g)
    assert fixed.shape == (3, 1, 28, 28)
    # each fixed patch is a 28x28 block of its canvas at an integer position
    for i in range(3):
        blocks = canvas[i, 0].unfold(0, 28, 1).unfold(1, 28, 1)  # (57, 57, 28, 28)
        assert ((blocks - fixed[i, 0]).abs().amax(dim=(-1, -2)) < 1e-5).any()
    same = co.random_patches(canvas, g, scale=torch.tensor([1.0, 0.5, 0.25]))
    # scale 1 leaves no room to move: the whole canvas
    whole = warp(canvas[:1], torch.tensor([[1.0, 0.0, 0.0]]), "attention", out_size=28)
    assert torch.allclose(same[0], whole[0], atol=1e-6)
    assert not torch.allclose(same[1], warp(canvas[1:2], torch.tensor([[0.5, 0.0, 0.0]]), "attention", out_size=28)[0])


def test_softmax_descriptor():
    from stnkit.models import CNN

    torch.manual_seed(0)
    d = co.DigitEncoder(CNN(1, 28).eval(), "softmax")(torch.rand(2, 1, 28, 28))
    assert d.shape == (2, 10) and torch.allclose(d.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="descriptor"):
        co.DigitEncoder(CNN(1, 28), "pixels")


def test_l2_descriptors_are_unit_vectors():
    from stnkit.models import CNN

    torch.manual_seed(0)
    cnn = CNN(1, 28).eval()
    x = torch.rand(2, 1, 28, 28)
    logits = co.DigitEncoder(cnn, "logits_l2")(x)
    # independent: the logits divided by their Euclidean length, computed by hand
    ref = cnn(x) / cnn(x).pow(2).sum(1, keepdim=True).sqrt()
    assert torch.allclose(logits, ref, atol=1e-6)
    concat = co.DigitEncoder(cnn, "concat_l2")(x)
    raw = co.DigitEncoder(cnn, "concat")(x)
    assert torch.allclose(concat * raw.norm(dim=1, keepdim=True), raw, atol=1e-4)
    assert torch.allclose(concat.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("bounded", [False, True])
def test_start_window_and_frozen_scale(tmp_path, bounded):
    torch.manual_seed(0)
    st = co.coloc_transformer(bounded, init_scale=0.5)
    x = torch.rand(3, 1, 84, 84)
    assert torch.allclose(st.predict_params(x), torch.tensor([[0.5, 0.0, 0.0]]).expand(3, 3), atol=1e-6)
    # a centred window of half the canvas's side: pixels 21..63
    assert torch.allclose(co.predicted_boxes(st, x), torch.tensor([[21.0, 21.0, 63.0, 63.0]]).expand(3, 4), atol=1e-4)
    with pytest.raises(ValueError, match="init_scale"):
        co.coloc_transformer(True, init_scale=2.5)
    # learn_scale=False: the head's scale row keeps its start through training
    _train(tmp_path, "frozen", init_scale=0.5, learn_scale=False, bounded=bounded, lr=0.1)
    tensors, _ = co.load_tensors(tmp_path / "frozen" / "model.safetensors")
    assert torch.all(tensors["head.weight"][0] == 0.0)
    assert torch.allclose(tensors["head.bias"][0], co.coloc_transformer(bounded, 0.5).head.bias[0])


# -- the constraints of issue 28: fixed or bounded scale, outside penalty, augmented encoder, val split ----
@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"scale_range": (0.5, 0.2), "init_scale": 0.3}, r"scale_range must have low <= high, got \(0.5, 0.2\)"),
        ({"scale_range": (0.0, 0.5), "init_scale": 0.3}, r"scale_range must be \(lo, hi\) with 0 < lo < hi"),
        ({"scale_range": (0.2, 0.5)}, r"init_scale must be in \(0.2, 0.5\) when scale_range is set, got 1.0"),
        ({"scale_range": 0.3, "init_scale": 0.3}, "scale_range must be a .low, high. pair, got 0.3"),
        ({"outside_weight": -1.0}, r"outside_weight must be a finite number in \[0.0, inf\], got -1.0"),
        ({"outside_weight": float("nan")}, "outside_weight must be a finite number"),
        ({"encoder_augment": 1}, "encoder_augment must be a bool, got int"),
        ({"split": "train"}, "split must be one of 'val', 'test', got 'train'"),
    ],
)
def test_constraint_options_are_refused_in_one_line(kw, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern) as err:
        co.ColocConfig(**kw)
    assert "\n" not in str(err.value)


def test_scale_range_from_json_equals_the_tuple():
    a = co.ColocConfig(scale_range=(0.25, 0.5), init_scale=1 / 3)
    b = co.ColocConfig.from_dict(json.loads(json.dumps(a.to_dict())))  # a list after JSON
    assert a == b and b.scale_range == (0.25, 0.5)


def test_fixed_scale_window_keeps_the_digits_extent(tmp_path):
    """learn_scale=False, init_scale=1/3: every window is 28 of the canvas's 84 px after training; it moves."""
    _train(tmp_path, "fixed", init_scale=1 / 3, learn_scale=False, bounded=True, lr=0.1)
    st = co.load_transformer(tmp_path / "fixed" / "model.safetensors")
    boxes = co.predicted_boxes(st, torch.rand(16, 1, 84, 84, generator=torch.Generator().manual_seed(1)))
    side = boxes[:, 2:] - boxes[:, :2]
    assert torch.allclose(side, torch.full_like(side, 28.0), atol=1e-3)
    assert (boxes[:, :2] - 28.0).abs().max() > 0.1  # the position was learnt: not the centred start window


def test_scale_range_keeps_the_scale_inside():
    st = co.coloc_transformer(True, init_scale=1 / 3, scale_range=(0.25, 0.5))
    x = torch.rand(4, 1, 84, 84)
    start = st.predict_params(x)
    assert torch.allclose(start, torch.tensor([[1 / 3, 0.0, 0.0]]).expand(4, 3), atol=1e-6)
    assert torch.allclose(co.predicted_boxes(st, x)[0], torch.tensor([28.0, 28.0, 56.0, 56.0]), atol=1e-4)
    with torch.no_grad():  # the head driven far either way: s at the range's ends, the centre on the canvas
        for sign, end in ((1.0, 0.5), (-1.0, 0.25)):
            st.head.bias.copy_(torch.tensor([sign * 1e3, sign * 1e3, -sign * 1e3]))
            p = st.predict_params(x)
            assert torch.allclose(p[:, 0], torch.full((4,), end)) and p[:, 1:].abs().max() <= 1.0
    loose = co.coloc_transformer(False, init_scale=0.3, scale_range=(0.2, 2.5))  # unbounded translation
    with torch.no_grad():
        loose.head.bias[1] = 3.0
    assert torch.allclose(loose.predict_params(x)[:, 1], torch.full((4,), 3.0))


def _outside_by_hand(s: float, tx: float, ty: float) -> float:
    """coverage_penalty of one attention window, summed point by point (align_corners=False: pixel centres)."""
    u = [(2 * i + 1) / 28 - 1 for i in range(28)]
    total = 0.0
    for uy in u:
        for ux in u:
            for v in (s * ux + tx, s * uy + ty):
                total += max(abs(v) - 1.0, 0.0) ** 2
    return total / (28 * 28)


def test_outside_penalty_zero_inside_positive_outside():
    st = co.coloc_transformer(True, init_scale=1 / 3)
    inside = torch.tensor([[1 / 3, 0.5, -0.5], [1 / 3, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(co.outside_penalty(st, inside)) == 0.0  # the whole canvas and windows on it
    half_out = torch.tensor([[1 / 3, 1.0, 0.0]], dtype=torch.float64)
    # x = 1 + u/3 leaves the canvas for the 14 columns u = 1/28, 3/28, ..., 27/28: sum of (k/84)^2 over odd k
    closed_form = sum((k / 84) ** 2 for k in range(1, 28, 2)) / 28
    assert closed_form == pytest.approx(3654 / (9 * 784 * 28))
    assert float(co.outside_penalty(st, half_out)) == pytest.approx(closed_form, rel=1e-12)
    zoomed = torch.tensor([[1.5, 0.2, -0.1]], dtype=torch.float64)
    assert float(co.outside_penalty(st, zoomed)) == pytest.approx(_outside_by_hand(1.5, 0.2, -0.1), rel=1e-12)
    p = zoomed.clone().requires_grad_(True)
    co.outside_penalty(st, p).backward()
    assert p.grad[0, 0] > 0  # shrinking the zoomed-out window lowers it


def test_outside_weight_enters_the_loss(tmp_path):
    """One step from the zoomed-out start s = 1.5: the recorded loss grows by weight x the hand-computed penalty."""
    kw = dict(init_scale=1.5, epochs=1, batch_size=4)
    base = _train(tmp_path, "w0", **kw)
    weighted = _train(tmp_path, "w2", outside_weight=2.0, **kw)
    expected = 2.0 * _outside_by_hand(1.5, 0.0, 0.0)
    assert weighted["losses"][0] - base["losses"][0] == pytest.approx(expected, abs=1e-3)
    assert weighted["train"]["outside_fraction"] > 0.0 and base["train"]["mean_scale"] < 2.0


def test_augmented_encoder(tmp_path):
    im, lb = _digits(3)
    d = torch.as_tensor(im[:4], dtype=torch.float32)[:, None] / 255.0
    a = co.augment_digits(d, torch.Generator().manual_seed(0))
    b = co.augment_digits(d, torch.Generator().manual_seed(0))
    assert a.shape == d.shape and torch.equal(a, b) and not torch.allclose(a, d, atol=1e-3)
    plain = co.train_encoder(im, lb, seed=0, epochs=1, batch_size=10)
    aug = co.train_encoder(im, lb, seed=0, epochs=1, batch_size=10, augment=True)
    assert not torch.equal(plain.classifier.weight, aug.classifier.weight)
    path = co.encoder_path(tmp_path, 0, True)
    assert path.name == "encoder-aug-seed0.safetensors"
    path.parent.mkdir(parents=True)
    co.load_or_train_encoder(path, im, lb, seed=0, epochs=1, augment=True)
    with pytest.raises(ValueError, match="'augment': False"):  # a cached augmented encoder is not taken for a plain one
        co.load_or_train_encoder(path, im, lb, seed=0, epochs=1, augment=False)


def test_the_random_streams_use_slots_no_canvas_and_no_other_stream_uses():
    from stnkit.data.dataset import SEED_STRIDE

    # a class has at most ~7,000 training digits: a canvas set's slot 10 * start + digit stays below 70,010
    canvases = range(0, 10 * 7_000 + 10)
    epochs = 10_000
    streams = {
        "loss_at": range(co.LOSS_AT_SLOT, co.LOSS_AT_SLOT + 1),
        "triplet": range(co.TRIPLET_SLOT, co.TRIPLET_SLOT + epochs),
        "search fit": range(co.SEARCH_FIT_SLOT, co.SEARCH_FIT_SLOT + 1),
        "encoder": range(co.ENCODER_SLOT, co.ENCODER_SLOT + epochs),
    }
    ranges = [canvases, *streams.values()]
    for i, a in enumerate(ranges):
        assert a.stop <= SEED_STRIDE
        for b in ranges[i + 1 :]:
            assert a.stop <= b.start or b.stop <= a.start, (a, b)


def test_each_training_stream_is_seeded_from_its_own_slot(monkeypatch, tmp_path):
    seeds = []

    class Recording(torch.Generator):
        def manual_seed(self, seed):
            seeds.append(int(seed))
            return super().manual_seed(seed)

    monkeypatch.setattr(torch, "Generator", Recording)
    im, lb = _digits(4)
    co.train_encoder(im, lb, seed=0, epochs=2, batch_size=20)
    assert seeds == [co.ENCODER_SLOT, co.ENCODER_SLOT + 1]  # seed 0: stream_seed(0, None) is 0
    seeds.clear()
    _train(tmp_path, "triplet", epochs=2)  # digit 1, test split: its canvases are slot 10 * 0 + 1
    assert seeds == [1, 1, co.TRIPLET_SLOT, co.TRIPLET_SLOT + 1]
    seeds.clear()
    _train(tmp_path, "search", search_rounds=1, search_steps=2, epochs=0)
    assert seeds == [1, 1, co.SEARCH_FIT_SLOT]


def test_validation_canvases_share_no_digit_with_the_test_canvases():
    im, lb = _digits(9)
    train, test = (im[:60], lb[:60]), (im[60:], lb[60:])  # 6 train and 3 test digits per class
    ds, held = co.problem_canvases(co.ColocConfig(digit=2, n=2, test_n=2), train, test)
    vds, vheld = co.problem_canvases(co.ColocConfig(digit=2, n=2, test_n=2, split="val"), train, test)
    assert ds.index.tolist() == [2, 12] and vds.index.tolist() == [22, 32] and vheld.index.tolist() == [42, 52]
    assert torch.equal(held.digits, CoLocalization(*test, 2, n=2).digits)  # the test split's held-out: test digits
    assert not torch.equal(ds.boxes, vds.boxes)


def _val_summary(tmp_path, name, split="val", **kw):
    run = co.run_dir_of(tmp_path / name, "plain", 3, 0)
    run.mkdir(parents=True)
    score = {"correct_percent": 40.0, "mean_iou": 0.45, "mean_scale": 0.333, "outside_fraction": 0.0, "n": 100}
    result = {"config": co.ColocConfig(digit=3, split=split, **kw).to_dict(), "train": score, "held_out": score}
    (run / "results.json").write_text(json.dumps({**result, "fit_seconds": 30.0}))
    return co.summarize_colocalization(tmp_path / name)


def test_recipe_log_from_validation_summaries(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    fixed = _val_summary(tmp_path, "a", learn_scale=False, init_scale=1 / 3, outside_weight=10.0)
    (folder / "fixed.json").write_text(json.dumps(fixed))
    (folder / "paper.json").write_text(json.dumps(_val_summary(tmp_path, "b")))
    md = co.write_recipe_log(folder)
    assert "| fixed | `--coloc-init-scale 0.333333 --coloc-fixed-scale --coloc-outside-weight 10` | plain | 3 |" in md
    assert "| paper | (defaults: the paper's setting) | plain | 3 | 1 | 40.0 (40) | 40.0 | 0.45 | 0.33 | 30 s |" in md
    rows = json.loads((folder / "recipes.json").read_text())
    assert rows[0]["command"].startswith(
        "stnkit reproduce colocalization --coloc-recipe paper --coloc-split val --kinds plain --classes 3"
    )
    (folder / "test.json").write_text(json.dumps(_val_summary(tmp_path, "c", split="test")))
    with pytest.raises(ValueError, match="holds test-split runs"):
        co.write_recipe_log(folder)


def test_start_window_score_by_hand():
    im, lb = _digits(4)
    ds = CoLocalization(im, lb, 1, n=4)
    whole = co.start_window_score(1.0, ds)
    assert whole["mean_iou"] == pytest.approx(1 / 9, abs=1e-4) and whole["correct_percent"] == 0.0
    centred = co.start_window_score(1 / 3, ds)  # the window 28..56: IoU with each box from its overlap
    x0, y0 = ds.boxes[:, 0], ds.boxes[:, 1]
    inter = (28 - (x0 - 28).abs()).clamp_min(0) * (28 - (y0 - 28).abs()).clamp_min(0)
    iou = inter / (2 * 784 - inter)
    assert centred["mean_iou"] == pytest.approx(float(iou.mean()), abs=1e-4)
    assert centred["correct_percent"] == pytest.approx(100.0 * float((iou > 0.5).float().mean()))


# -- the label-free window search (search_rounds > 0) -----------------------------------------------------
def test_candidate_windows_are_28px_on_the_canvas():
    w = co.candidate_windows(4)
    boxes = attention_box(w, 84, 28, False)
    side = boxes[:, 2:] - boxes[:, :2]
    assert len(w) == 15 * 15 and torch.allclose(side, torch.full_like(side, 28.0))
    assert boxes.min() >= -1e-9 and boxes.max() <= 84 + 1e-9
    corners = {tuple(b) for b in boxes[:, :2].round().long().tolist()}
    assert (56, 56) in corners and (0, 0) in corners and (4, 8) in corners
    assert len(co.candidate_windows(10)) == 7 * 7  # 0, 10, ..., 50 and 56


class _PooledInk(torch.nn.Module):
    """A stand-in for e(): the crop pooled to 4x4, unit length (a blank crop encodes to 0)."""

    def forward(self, x):
        return F.normalize(F.avg_pool2d(x, 7).flatten(1), dim=1, eps=1e-3)  # float noise stays ~0


def _ink_canvases(n=6, seed=0):
    """Canvases each with one 28x28 'digit' (a fixed pattern) at a corner on the 4-px grid; its boxes."""
    g = torch.Generator().manual_seed(seed)
    pattern = (torch.rand(28, 28, generator=g) < 0.5).float()
    pos = torch.randint(0, 15, (n, 2), generator=g) * 4
    canvases = torch.zeros(n, 1, 84, 84)
    for i, (x0, y0) in enumerate(pos.tolist()):
        canvases[i, 0, y0 : y0 + 28, x0 : x0 + 28] = pattern
    boxes = torch.cat([pos, pos + 28], 1).double()
    return canvases, boxes


def test_search_finds_the_digits_when_the_other_crops_are_digits():
    canvases, boxes = _ink_canvases()
    truth = attention_from_box(boxes, 84)
    found, losses = co.search_windows(_PooledInk(), canvases, truth, rounds=1, stride=4)
    assert torch.allclose(found, truth, atol=1e-9) and len(losses) == 1
    # a start that is no digit gives no answer in general; from the centre, the rounds lower the loss
    centre = torch.tensor([[1 / 3, 0.0, 0.0]], dtype=torch.float64).expand(len(canvases), 3)
    history = []
    last, losses = co.search_windows(_PooledInk(), canvases, centre, rounds=3, stride=4, history=history)
    assert losses[-1] <= losses[0] + 1e-9 and len(history) == 3 and torch.equal(history[-1], last)


@pytest.mark.parametrize("first", ["start", "best"])
def test_search_loss_is_the_hinge_by_hand(first):
    """The loss of the chosen window: mean over the other crops and over the canvas's own candidates.

    ``first="start"``: the other crops are the start windows' (here the truth);
    ``"best"``: each other canvas's candidate nearest to the window.
    """
    canvases, boxes = _ink_canvases(3, seed=1)
    truth = attention_from_box(boxes, 84)
    enc = _PooledInk()
    found, (loss,) = co.search_windows(enc, canvases, truth, rounds=1, stride=28, first=first)
    cand = co.candidate_windows(28)
    e = [enc(warp(c[None].expand(len(cand), -1, -1, -1), cand.float(), "attention", out_size=28)) for c in canvases]
    crops = enc(warp(canvases, truth.float(), "attention", out_size=28))
    total = 0.0
    for i in range(3):
        k = int(((cand - found[i]).abs().sum(1) < 1e-9).nonzero()[0])
        hinge = []
        for m in (m for m in range(3) if m != i):
            if first == "start":
                d_pos = float((e[i][k] - crops[m]).pow(2).sum())
            else:
                d_pos = float((e[i][k] - e[m]).pow(2).sum(1).min())
            hinge += [max(0.0, d_pos - float((e[i][k] - e[i][j]).pow(2).sum()) + 1.0) for j in range(len(cand))]
        total += sum(hinge) / len(hinge)
    assert loss == pytest.approx(total / 3, abs=1e-4)


def test_search_run_records_the_search_and_resumes(tmp_path, monkeypatch):
    kw = dict(search_rounds=2, search_stride=14, search_steps=5, epochs=1, init_scale=1 / 3, learn_scale=False)
    one_go = _train(tmp_path, "one_go", **kw)
    s = one_go["search"]
    assert len(s["loss_per_round"]) == 2 and len(s["fit_loss"]) == 2
    assert s["correct_percent_per_round"][-1] == s["windows"]["correct_percent"]
    assert 0.0 <= s["windows"]["correct_percent"] <= 100.0 and s["fitted"]["mean_scale"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    # stopped right after the search (its state saved as epoch 0), then run again: the same run
    _train_stopped_at_first_save(monkeypatch, tmp_path, "resumed", **kw)
    resumed = _train(tmp_path, "resumed", **kw)
    assert resumed["train"] == one_go["train"] and resumed["losses"] == one_go["losses"]
    assert {k: v for k, v in resumed["search"].items() if k != "seconds"} == {
        k: v for k, v in s.items() if k != "seconds"
    }
    # no epoch after the search is a setting; without the search it is not
    assert _train(tmp_path, "no_epochs", **{**kw, "epochs": 0})["losses"] == []
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 99999\], got 0"):
        co.ColocConfig(epochs=0)


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"search_rounds": -1}, r"search_rounds must be an int >= 0, got -1"),
        ({"search_stride": 0}, r"search_stride must be an int in \[1, 56\], got 0"),
        ({"search_steps": 1.5}, "search_steps must be an int, got float"),
        ({"search_first": "truth"}, "search_first must be one of 'start', 'best', got 'truth'"),
    ],
)
def test_search_options_are_refused_in_one_line(kw, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        co.ColocConfig(**kw)


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--coloc-search-rounds", "-1"], "--coloc-search-rounds must be an int >= 0, got -1"),
        (["--coloc-search-stride", "60"], "--coloc-search-stride must be an int in [1, 56], got 60"),
        (["--coloc-search-first", "truth"], "--coloc-search-first must be one of 'start', 'best'"),
        (["--coloc-search-rounds", "0", "--coloc-epochs", "0"], "--coloc-epochs must be >= 1"),
        (["--coloc-search-rounds", "1", "--coloc-epochs", "-1"], "--coloc-epochs must be >= 0"),
    ],
)
def test_cli_search_options_are_one_line(tmp_path, capsys, argv, pattern):
    test_cli_bad_options_are_one_line(tmp_path, capsys, argv, pattern)


def test_candidate_crops_are_what_warp_samples():
    g = torch.Generator().manual_seed(0)
    canvases = torch.rand(2, 1, 84, 84, generator=g)
    corners, windows = co.candidate_corners(8), co.candidate_windows(8)
    ident = torch.nn.Flatten()
    fast = co._encode_candidates(ident, canvases, corners)
    for i in range(2):
        slow = warp(canvases[i : i + 1].expand(len(windows), -1, -1, -1), windows.float(), "attention", out_size=28)
        assert torch.allclose(fast[i], slow.flatten(1), atol=1e-5)


def test_mean_hinge_equals_the_brute_force():
    g = torch.Generator().manual_seed(0)
    d_pos, d_neg = (
        torch.rand(5, 7, generator=g, dtype=torch.float64) * 3,
        torch.rand(5, 9, generator=g, dtype=torch.float64) * 3,
    )
    brute = F.relu(d_pos[:, :, None] - d_neg[:, None, :] + 1.0).mean(dim=(1, 2))
    assert torch.allclose(co._mean_hinge(d_pos, d_neg, 1.0), brute)


@pytest.mark.parametrize("digit", [0, 1, 9])
def test_loss_at_patches_are_not_the_digits_of_the_canvases(digit):
    # the random patches of loss_at come from their own stream: once they shared slot 0 with digit 0's
    # canvases and were exactly the digits' own boxes
    images, labels = _digits(n_per_class=12)
    ds = CoLocalization(images, labels, digit, "plain", n=12, seed=0)
    truth = warp(ds.images, attention_from_box(ds.boxes.double(), 84).float(), "attention", out_size=28)
    rand = co.loss_at_patches(ds.images, 0)
    same = (rand - truth).abs().flatten(1).amax(1) < 1e-6
    assert int(same.sum()) <= 1
    assert torch.equal(rand, co.loss_at_patches(ds.images, 0))  # deterministic by seed
