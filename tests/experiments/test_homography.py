"""``stnkit train --dataset homography`` and ``stnkit reproduce homography``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("skimage")
cv2 = pytest.importorskip("cv2")

from stnkit.cli import main  # noqa: E402
from stnkit_experiments import homography  # noqa: E402

TINY = ["--train-size", "8", "--val-size", "4", "--test-size", "4", "--batch-size", "4", "--epochs", "1"]


@pytest.mark.parametrize("model", ["homography-net", "homography-unsup"])
def test_train_one_tiny_epoch(tmp_path, capsys, model):
    out = tmp_path / model
    assert main(["train", "--model", model, "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["error_unit"] == "px" and results["test_size"] == 4 and results["epochs"] == 1
    assert results["config"]["dataset"] == "homography" and 0 < results["test_error"] < 100
    text = capsys.readouterr().out
    assert "px (4 homography test samples)" in text and "val error" in text and " px;" in text


def test_train_refuses_a_classifier_on_homography(tmp_path, capsys):
    assert main(["train", "--model", "cnn", "--dataset", "homography", "--out", str(tmp_path / "x"), *TINY]) != 0
    assert "and dataset 'homography' is a homography dataset" in capsys.readouterr().err


def test_orb_ransac_recovers_a_small_move_and_counts_failures():
    from stnkit.data.homography import SPLITS, draw_pair, load_photograph

    y = torch.tensor([[6.0, -4.0, 8.0, -3.0, 7.0, -5.0, 6.0, -2.0]])  # identity: 7.7 px off; reversed: about twice
    errs = []
    for name in SPLITS["train"]:
        x = draw_pair(torch.from_numpy(load_photograph(name)).view(1, 1, 240, 320), torch.tensor([[96.0, 56.0]]), y)
        off, _ = homography.orb_ransac(x)
        errs.append(float((off - y).view(-1, 4, 2).norm(dim=2).mean()))
    assert np.median(errs) < 4.0
    # a pair without any texture: no keypoints, a failure, predicted as the identity
    flat = torch.full((1, 2, 128, 128), 0.5)
    off, failures = homography.orb_ransac(flat)
    assert failures == 1 and torch.equal(off, torch.zeros(1, 8))


def test_predict_one_step_is_the_network():
    from stnkit.models import create

    model = create("homography-net", in_channels=2, in_size=128, num_classes=8)
    torch.nn.init.normal_(model.out.weight, std=0.01)
    model.eval()
    x = torch.rand(3, 2, 128, 128)
    assert torch.allclose(homography.predict(model, x, steps=1), model(x), atol=1e-3)
    # refinement of an identical pair by a network that predicts nothing stays at the identity
    zero = create("homography-net", in_channels=2, in_size=128, num_classes=8)
    assert torch.allclose(homography.predict(zero, x, steps=4), torch.zeros(3, 8), atol=1e-4)


def test_recrop_refinement_crops_p_b_at_the_truth_and_composes_exactly():
    pairs = homography.draws("test", 3, seed=5)
    x, y = pairs["x"], pairs["y"]
    # a network answering the true offsets first, then seeing P_B against P_B (what the re-crop at the truth
    # must be) and answering zero: the estimate stays the truth
    seen = []

    class Scripted(torch.nn.Module):  # answers from a script, recording what it is shown
        def __init__(self, answer):
            super().__init__()
            self.answer = answer

        def forward(self, t):
            seen.append(t)
            return self.answer(len(seen))

    truth_then_zero = Scripted(lambda k: y.clone() if k == 1 else torch.zeros(3, 8))
    out = homography.predict(truth_then_zero, x, steps=3, source=pairs)
    assert torch.allclose(out, y, atol=1e-3)
    assert torch.allclose(seen[1][:, 0], x[:, 1], atol=1e-4)  # the re-crop at the true quad is P_B
    # from the identity, a residual r moves the estimate by r (the crop is P_A: the composition is r itself)
    r = torch.tensor([[3.0, -2.0, 1.0, 4.0, -2.0, 2.0, 0.5, -1.0]]).expand(3, 8)
    seen.clear()
    zero_then_r = Scripted(lambda k: torch.zeros(3, 8) if k == 1 else r)
    assert torch.allclose(homography.predict(zero_then_r, x, steps=2, source=pairs), r, atol=1e-3)
    assert torch.allclose(seen[1][:, 0], x[:, 0], atol=1e-4)  # the re-crop at the identity is P_A
    # from the truth, a residual r composes through the estimate's homography (OpenCV's, as the oracle):
    # the corners moved by r, mapped from the patch to the photograph
    seen.clear()
    truth_then_r = Scripted(lambda k: y.clone() if k == 1 else r)
    got = homography.predict(truth_then_r, x, steps=2, source=pairs)
    from stnkit.data.homography import patch_corners

    corners = patch_corners(128).numpy().astype(np.float64)
    for i in range(3):
        at = corners + pairs["origins"][i].numpy()
        h = cv2.getPerspectiveTransform(corners.astype(np.float32), (at + y[i].view(4, 2).numpy()).astype(np.float32))
        moved = cv2.perspectiveTransform((corners + r[i].view(4, 2).numpy()).reshape(1, 4, 2), h)[0]
        assert np.allclose(got[i].view(4, 2).numpy(), moved - at, atol=1e-2)
    # in batches: each pair re-cropped from its own photograph and origin, whatever the batch it falls in
    from stnkit.models import create

    net = create("homography-net", in_channels=2, in_size=128, num_classes=8)
    torch.nn.init.normal_(net.out.weight, std=0.01)
    whole = homography.predict(net, x, steps=3, source=pairs)
    assert torch.allclose(homography.predict(net, x, steps=3, source=pairs, batch_size=2), whole, atol=1e-4)


@pytest.mark.slow
def test_reproduce_homography_tiny_resumes(tmp_path):
    out = tmp_path / "results"
    args = ["reproduce", "homography", "--out", str(out), *TINY]
    assert main(args) == 0
    summary = json.loads((out / "homography.json").read_text())
    assert set(summary["table"]) == set(homography.ROWS)
    assert summary["table"]["orb-ransac"]["failures"] >= 0 and summary["test_size"] == 4
    assert summary["photographs"]["test"] == list(homography.SPLITS["test"])
    md = (out / "homography.md").read_text()
    assert "ORB + RANSAC (OpenCV)" in md and "unverified" in md
    assert (out / "figures" / "homography_quads.png").is_file()
    results = out / "runs" / "homography" / "homography-net" / "seed0" / "results.json"
    before = results.stat().st_mtime_ns
    assert main([*args, "--report-only"]) == 0  # nothing trained again
    assert results.stat().st_mtime_ns == before
    again = json.loads((out / "homography.json").read_text())
    assert np.isclose(again["table"]["homography-net"]["error"], summary["table"]["homography-net"]["error"])


def _summary(net: float, unsup: float, orb: float = 24.5, ident: float = 24.5) -> dict:
    photos = list(homography.SPLITS["test"])

    def row(err, med):
        return {"error": err, "median": med, "n": 4, "per_photograph": dict.fromkeys(photos, err)}

    table = {"identity": row(ident, ident), "orb-ransac": row(orb, 2.6)}
    table["orb-ransac"]["per_photograph"] = {p: (85.0 if p == "rocket" else 3.0) for p in photos}
    table["homography-net"], table["homography-unsup"] = row(net, net), row(unsup, unsup)
    return {"table": table, "photographs": {"test": photos}}


def test_target_verdict_says_reached_not_reached_or_only_formally():
    text = " ".join(homography.target_lines(_summary(20.0, 21.0)))
    assert "**reached**" in text and "ORB + RANSAC 2.60 px" in text and "(rocket)" in text
    assert "**not reached**" in " ".join(homography.target_lines(_summary(20.0, 25.0)))
    formal = " ".join(homography.target_lines(_summary(20.0, 24.4)))  # below ORB's mean, but the identity's level
    assert "**reached only formally**: homography-unsup is within 0.5 px of the identity" in formal


def test_docs_page_keeps_the_hand_written_notes(tmp_path, monkeypatch):
    page = tmp_path / "docs" / "homography.md"
    page.parent.mkdir()
    page.write_text("old generated text\n" + homography.NOTES_MARKER + "\nmy notes\n")
    monkeypatch.setattr(homography, "render_page", lambda summary, figure: f"generated, figure {figure}\n")
    homography.write_page(tmp_path / "results", {}, page)
    text = page.read_text()
    assert text.startswith("generated, figure ../results/figures/homography_quads.png")
    assert "old generated text" not in text and text.endswith(homography.NOTES_MARKER + "\nmy notes\n")
