"""The ``sequence`` dataset, the sequence models (seq-cnn, seq-st-cnn, rnn-spn) and ``stnkit reproduce sequence``."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.func import functional_call

from stnkit.data import dataset_info, load_digits, open_dataset
from stnkit.data.distortions import draw_excluding
from stnkit.data.sequence import SequenceMNIST
from stnkit.models import SEQUENCE_MODELS, STClassifier, create
from stnkit.models.sequence import RecurrentSPN, initial_windows


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits("test")
    return images[:40], labels[:40]


def _reference_canvas(images: np.ndarray, index: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The clutter-free canvases written out with numpy slices from the recorded ground truth."""
    out = np.zeros((index.shape[0], 100, 100), dtype=np.float32)
    for i in range(index.shape[0]):
        for k in range(3):
            x0, y0, x1, y1 = boxes[i, k]
            region = out[i, y0:y1, x0:x1]
            np.maximum(region, images[index[i, k]].astype(np.float32) / 255.0, out=region)
    return out


# -- the dataset ----------------------------------------------------------------------------------
def test_registry_describes_the_sequence_dataset():
    info = dataset_info("sequence")
    assert (info.in_channels, info.canvas_size, info.num_classes, info.num_labels) == (1, 100, 10, 3)


def test_deterministic_by_seed_and_fresh_per_epoch(digits):
    a = open_dataset("sequence", *digits, seed=5)
    b = open_dataset("sequence", *digits, seed=5)
    c = open_dataset("sequence", *digits, seed=6)
    for name in ("images", "labels", "boxes", "index"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.images, c.images) and not torch.equal(a.boxes, c.boxes)
    x, y = a[3]
    assert x.shape == (1, 100, 100) and x.dtype == torch.float32 and y.shape == (3,) and y.dtype == torch.int64
    fresh = open_dataset("sequence", *digits, seed=5, fresh=True)
    first = fresh.images.clone()
    fresh.set_epoch(1)
    assert not torch.equal(first, fresh.images)
    fresh.set_epoch(0)
    assert torch.equal(first, fresh.images)  # an epoch's draw is a function of (seed, epoch)
    a.set_epoch(4)  # a fixed set keeps its draw
    assert torch.equal(a.images, b.images)


def test_labels_are_the_source_digits_in_order(digits):
    images, labels = digits
    ds = SequenceMNIST(images, labels, seed=1)
    idx = ds.index
    assert torch.equal(idx[:, 0], torch.arange(len(labels)))  # sample i starts with digit i
    assert all(len(set(row)) == 3 for row in idx.tolist())  # three different source digits
    assert torch.equal(ds.labels, torch.as_tensor(labels, dtype=torch.int64)[idx])


def test_digits_lie_in_their_boxes_without_clutter(digits):
    images, labels = digits
    ds = SequenceMNIST(images, labels, seed=2, n_clutter=0)
    boxes = ds.boxes.numpy()
    # frames side by side, 28 px wide and high, on the canvas, one slope
    assert np.all(boxes[:, :, 2] - boxes[:, :, 0] == 28) and np.all(boxes[:, :, 3] - boxes[:, :, 1] == 28)
    assert np.all(boxes[:, 1:, 0] - boxes[:, :-1, 0] == 28)
    assert np.all(boxes[:, 1, 1] - boxes[:, 0, 1] == boxes[:, 2, 1] - boxes[:, 1, 1])
    assert boxes.min() >= 0 and boxes[..., 2:].max() <= 100
    ref = _reference_canvas(np.asarray(images), ds.index.numpy(), boxes)
    assert np.array_equal(ds.images[:, 0].numpy(), ref)  # every digit copied exactly into its box
    # and no ink outside the three boxes
    inside = np.zeros_like(ref, dtype=bool)
    for i in range(len(ds)):
        for x0, y0, x1, y1 in boxes[i]:
            inside[i, y0:y1, x0:x1] = True
    assert ds.images[:, 0].numpy()[~inside].max() == 0.0


def test_clutter_is_eight_9x9_patches_on_top(digits):
    images, labels = digits
    clean = SequenceMNIST(images, labels, seed=3, n_clutter=0)
    ds = SequenceMNIST(images, labels, seed=3)
    assert torch.equal(ds.boxes, clean.boxes) and torch.equal(ds.labels, clean.labels)  # clutter is drawn last
    assert torch.all(ds.images >= clean.images)  # pasted by maximum: each digit's ink is kept
    changed = (ds.images != clean.images).flatten(1).sum(1)
    assert changed.max() <= 8 * 81 and changed.float().mean() > 20  # some clutter, at most 8 patches of 81 px


def test_draw_excluding_never_draws_an_excluded_value_and_reaches_the_others():
    g = torch.Generator().manual_seed(0)
    exclude = torch.tensor([[3, 0, 5], [6, 2, 4]])
    idx = draw_excluding(7, exclude, (2, 2000), g)
    for row, ex in zip(idx.tolist(), exclude.tolist()):
        assert set(row) == set(range(7)) - set(ex)


def test_bad_sources_are_refused(digits):
    images, labels = digits
    with pytest.raises(ValueError, match="images must hold at least 4 digits, got 3"):
        SequenceMNIST(images[:3], labels[:3])
    with pytest.raises(ValueError, match="max_slope must be"):
        SequenceMNIST(images, labels, max_slope=5.0)


# -- the models -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_models_output_one_row_of_logits_per_digit(name):
    model = create(name, in_size=100, num_labels=3, loc_downsample=2)
    assert model(torch.rand(2, 1, 100, 100)).shape == (2, 3, 10)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 100, 100\)"):
        model(torch.rand(2, 1, 60, 60))


def test_num_labels_must_fit_the_model():
    with pytest.raises(ValueError, match="num_labels must be > 1 for model 'rnn-spn', got 1"):
        create("rnn-spn", in_size=100)
    with pytest.raises(ValueError, match="num_labels must be 1 for model 'cnn', got 3"):
        create("cnn", in_size=100, num_labels=3)
    with pytest.raises(ValueError, match="transform must be 'affine' for model 'rnn-spn', got 'tps'"):
        create("rnn-spn", in_size=100, num_labels=3, transform="tps")


def test_rnn_spn_starts_at_its_documented_windows():
    torch.manual_seed(0)
    model = create("rnn-spn", in_size=100, num_labels=3, loc_downsample=2).double()
    x = torch.rand(3, 1, 100, 100, dtype=torch.float64)
    crops, params = model.attend(x)
    # whatever the input, step k reads [[0.4, 0, c_k], [0, 0.4, 0]], c_k = -2/3, 0, 2/3
    want = torch.tensor([[0.4, 0, -2 / 3, 0, 0.4, 0], [0.4, 0, 0, 0, 0.4, 0], [0.4, 0, 2 / 3, 0, 0.4, 0]])
    assert torch.allclose(params, want.double().expand(3, -1, -1), atol=1e-7)
    assert torch.allclose(initial_windows(3).double(), want.double(), atol=1e-7)
    # the crops are those windows sampled by torch's own affine_grid / grid_sample
    for k in range(3):
        theta = want[k].double().view(1, 2, 3).expand(3, -1, -1)
        grid = F.affine_grid(theta, (3, 1, 28, 28), align_corners=False)
        ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        assert torch.allclose(crops[:, k], ref, atol=1e-10)


def test_seq_st_cnn_starts_at_the_identity():
    model = create("seq-st-cnn", in_size=100, num_labels=3, loc_downsample=2).double()
    assert isinstance(model, STClassifier)
    x = torch.rand(2, 1, 100, 100, dtype=torch.float64)
    out, params = model.warp_input(x)
    assert torch.allclose(params[0], torch.tensor([1.0, 0, 0, 0, 1.0, 0], dtype=torch.float64).expand(2, -1))
    # the identity sampled at 50x50: bilinear at the pixel-pair centres = the 2x2 mean
    assert torch.allclose(out, F.avg_pool2d(x, 2), atol=1e-10)


def test_gradcheck_through_the_recurrence():
    torch.manual_seed(0)
    model = RecurrentSPN(1, 8, num_steps=3, num_classes=3, crop_size=4, hidden=2).double()
    with torch.no_grad():  # leave the start windows: the crops must depend on the GRU's state
        model.head.weight.normal_(0.0, 0.3)
    names = ("head.weight", "rnn.weight_hh", "start")
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters() if n in names}
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)

    def fn(x, hw, whh, start):
        return functional_call(model, {"head.weight": hw, "rnn.weight_hh": whh, "start": start}, (x,))

    assert gradcheck(fn, (x, params["head.weight"], params["rnn.weight_hh"], params["start"]), fast_mode=True)


# -- stnkit reproduce sequence ----------------------------------------------------------------------
TINY = ["--train-size", "16", "--val-size", "8", "--test-size", "8", "--batch-size", "8", "--epochs", "1"]


def test_reproduce_sequence_smoke_skips_finished_and_resumes(tmp_path):
    pytest.importorskip("lightning")
    from stnkit.cli import main

    out = tmp_path / "results"
    argv = ["reproduce", "sequence", "--out", str(out), "--models", "rnn-spn", *TINY]
    assert main(argv) == 0
    summary = json.loads((out / "sequence.json").read_text())
    assert summary["runs_done"] == 1 and summary["paper"] == {"seq-cnn": 2.9, "seq-st-cnn": 2.0, "rnn-spn": 1.5}
    assert set(summary["table"]["rnn-spn"]) >= {"digit_error", "sequence_error"}
    assert (
        "| RNN-SPN |" in (out / "sequence.md").read_text()
        and "| CNN | – | 2.9 | – |" in (out / "sequence.md").read_text()
    )
    run = out / "runs" / "sequence" / "rnn-spn" / "seed0"
    assert (run / "show.png").is_file() and (out / "figures" / "sequence_attention.png").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["test_size"] == 8 * 3 and "sequence_error" in results
    before = (run / "results.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished: not trained again
    assert (run / "results.json").stat().st_mtime_ns == before
    # an interrupted run (no results.json) goes on from last.ckpt: no step is trained twice
    (run / "results.json").unlink()
    assert main(argv) == 0
    assert json.loads((run / "results.json").read_text())["global_step"] == results["global_step"]
    with pytest.raises(SystemExit, match="unknown model 'cnn'; valid: seq-cnn, seq-st-cnn, rnn-spn"):
        main(["reproduce", "sequence", "--out", str(out), "--models", "cnn"])
