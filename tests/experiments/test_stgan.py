"""stnkit reproduce stgan: a tiny setting end to end, resumption per stage, one-line refusals."""

import json

import pytest
import torch

from stnkit.cli import main
from stnkit.data.compositing import placement_error
from stnkit_experiments import stgan

TINY = [
    "--train-size", "24", "--val-size", "6", "--test-size", "6", "--batch-size", "6",
    "--image-size", "32", "32", "--stgan-steps", "2", "--stgan-iters", "3", "--stgan-sup-iters", "3",
]  # fmt: skip


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_stgan_target_on_a_tiny_setting_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    docs = tmp_path / "stgan_doc.md"
    code, text, err = _run(["reproduce", "stgan", "--out", str(out), *TINY, "--docs", str(docs)], capsys)
    assert code == 0, err
    summary = json.loads((out / "stgan.json").read_text())
    assert set(summary["rows"]) == {"st-gan", "supervised", "st-gan-from-supervised"}
    for row in summary["rows"].values():
        assert len(row["test_error"]) == 3 and len(row["val_error"]) == 3 and len(row["stages"]) == 2
        assert all(e >= 0 for e in row["test_error"])
    # the "before" column is the perturbation's own error, the same for both rows
    assert summary["rows"]["st-gan"]["test_error"][0] == summary["rows"]["supervised"]["test_error"][0]
    assert (out / "figures" / "stgan.png").is_file()
    assert "| st-gan | test |" in (out / "stgan.md").read_text() and "../" not in (out / "stgan.md").read_text()
    assert "| supervised | val |" in docs.read_text()
    run = out / "runs" / "stgan-st-gan-s0"
    before = (run / "stage-1.json").read_text()
    # an interrupted row: the last stage and the row's results gone; it resumes after step 1
    (run / "stage-2.json").unlink()
    (run / "results.json").unlink()
    code, text, _ = _run(["reproduce", "stgan", "--out", str(out), *TINY], capsys)
    assert code == 0 and "st-gan: resumed after step 1" in text and "st-gan step 1:" not in text
    assert (run / "stage-1.json").read_text() == before and (run / "results.json").is_file()
    code, text, _ = _run(["reproduce", "stgan", "--out", str(out), *TINY], capsys)
    assert code == 0 and "every row is finished" in text
    # the page's hand-written notes survive a regeneration; the generated part is rewritten
    docs.write_text("stale table\n" + stgan.NOTES_MARKER + "\nmy notes\n")
    code, _, _ = _run(["reproduce", "stgan", "--out", str(out), *TINY, "--docs", str(docs), "--report-only"], capsys)
    page = docs.read_text()
    assert code == 0 and "stale table" not in page and page.endswith(stgan.NOTES_MARKER + "\nmy notes\n")
    assert "| supervised | val |" in page


def test_a_stage_of_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(["reproduce", "stgan", "--out", str(out), "--models", "supervised", *TINY], capsys)[0] == 0
    code, _, err = _run(
        ["reproduce", "stgan", "--out", str(out), "--models", "supervised", *TINY, "--stgan-sup-iters", "4"], capsys
    )
    assert code != 0 and "was written with other settings" in str(code) + err


def test_errors_before_and_after_are_the_placement_errors():
    config = stgan.config_with(size=32, loc_size=16, steps=1)
    split = stgan.render_split(5, 3, config)
    gen = stgan.build_generator(config)
    before, after = stgan.errors(gen, split, 1, config.size)
    assert before == pytest.approx(after, abs=1e-4)  # identity at initialisation
    assert before == pytest.approx(placement_error(split["perturbations"], split["vertices"], 32).mean().item())
    assert before > 0.3
    fg, bg, _ = stgan.fake_batch(split, torch.arange(2))
    exact = stgan.real_batch(split, torch.arange(2))
    assert torch.allclose(exact, fg[:, :3] + (1 - fg[:, 3:]) * bg)
    jittered = stgan.real_batch(split, torch.arange(2), torch.Generator().manual_seed(0))
    assert 0 < (jittered - exact).abs().max() < 0.6  # moved by at most half a pixel


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--models", "gan"], "unknown row 'gan'; valid: st-gan, supervised, st-gan-from-supervised"),
        (["--epochs", "3"], "--epochs not read by this target"),
        (["--stgan-loss", "hinge"], "--stgan-loss must be one of 'ns', 'wgan-gp', got 'hinge'"),
        (["--stgan-steps", "0"], "--stgan-steps must be a positive int, got 0"),
        (["--stgan-loc-size", "128"], "--stgan-loc-size must be an int in [8, 64], got 128"),
        (["--stgan-perturb", "0.8"], "--stgan-perturb must be a finite number in [0.0, 0.5], got 0.8"),
        (["--stgan-critic-iters", "0"], "--stgan-critic-iters must be a positive int, got 0"),
        (["--stgan-lr-d", "0"], "--stgan-lr-d must be a finite number > 0, got 0.0"),
        (["--image-size", "32", "48"], "--image-size must be square and at least 16, got 32 48"),
        (["--seeds", "2"], "one seed per row (--seeds 1)"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, argv, pattern):
    code, text, err = _run(["reproduce", "stgan", "--out", str(tmp_path / "o"), *argv], capsys)
    msg = err if err else str(code)
    assert code != 0 and pattern in msg and msg.strip().count("\n") == 0


def _summary(rows):
    config = stgan.config_with(steps=2).to_dict()
    row = {"val_error": [3.0, 2.5, 2.4], "test_error": [3.1, 2.6, 2.5], "fit_seconds": 60.0}
    return {"experiment": "stgan", "config": config, "rows": {r: dict(row) for r in rows}}


def test_the_page_names_the_from_supervised_row_only_when_it_was_run():
    without = stgan.render_markdown(_summary(["st-gan", "supervised"]))
    assert "from-supervised" not in without and "| st-gan | test | 3.10 | 2.60 | 2.50 | 1.0 |" in without
    both = _summary(["st-gan", "supervised", "st-gan-from-supervised"])
    both["rows"]["st-gan-from-supervised"]["test_error"] = [3.1, 2.7, 2.8]
    page = stgan.render_markdown(both)
    assert "| st-gan-from-supervised | val |" in page
    assert "The from-supervised row ends at 2.80 px" in page and "did not improve on it" in page
    assert "fresh random perturbations" in page  # sup_redraw, the default
    assert "fixed perturbations" in stgan.render_markdown(
        {**both, "config": stgan.config_with(sup_redraw=False).to_dict()}
    )


def test_cli_args_give_back_the_config():
    config = stgan.config_with(loc_size=32, perturb=0.2, sup_redraw=False, critic_iters=3, lr_d=4e-4)
    args = stgan.cli_args(config)
    assert args == [
        "--stgan-loc-size", "32", "--stgan-perturb", "0.2", "--no-stgan-sup-redraw",
        "--stgan-critic-iters", "3", "--stgan-lr-d", "0.0004",
    ]  # fmt: skip
    assert stgan.cli_args(stgan.STGAN_DEFAULTS) == []


@pytest.mark.parametrize(
    "options,pattern",
    [
        ({"loc_size": 65}, "loc_size must be an int in [8, 64], got 65"),
        ({"sup_redraw": 1}, "sup_redraw must be a bool, got int 1"),
        ({"lr_g": -1.0}, "lr_g must be a finite number in [0.0, inf], got -1.0"),
        ({"critic_iters": 0}, "critic_iters must be a positive int, got 0"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(options, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern.replace("[", r"\[").replace("]", r"\]")):
        stgan.config_with(**options)


TINIER = [
    "--train-size", "8", "--val-size", "3", "--test-size", "3", "--batch-size", "4",
    "--image-size", "16", "16", "--stgan-steps", "1", "--stgan-iters", "2", "--stgan-sup-iters", "2",
]  # fmt: skip


def test_from_supervised_starts_from_the_supervised_generator(tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = _run(
        ["reproduce", "stgan", "--out", str(out), "--models", "st-gan-from-supervised", *TINIER], capsys
    )
    assert code == 0, err
    summary = json.loads((out / "stgan.json").read_text())
    assert set(summary["rows"]) == {"st-gan-from-supervised"}  # the bound was trained, not reported
    assert "supervised step 1:" in text and "from-supervised" in (out / "stgan.md").read_text()
    config = stgan.StganConfig.from_dict(summary["config"])
    sup = torch.load(stgan.run_dir(out, "supervised", config) / "stage-1.pt", weights_only=True)["generator"]
    fresh = stgan.build_generator(config).state_dict()
    fs = torch.load(stgan.run_dir(out, "st-gan-from-supervised", config) / "stage-1.pt", weights_only=True)
    # Adam moves a weight by about lr per update: 2 supervised updates (lr 1e-3) from the fresh weights,
    # then 2 adversarial ones (lr 1e-4) from the supervised weights
    assert max((sup[k] - fresh[k]).abs().max().item() for k in sup) > 1.5e-3
    assert max((fs["generator"][k] - sup[k]).abs().max().item() for k in sup) < 3e-4
