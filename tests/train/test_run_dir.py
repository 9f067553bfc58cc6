"""The run directory: a resume continues the run that was started, --overwrite never deletes a file of yours."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lightning")

from stnkit.cli import main  # noqa: E402
from stnkit.train import TrainConfig  # noqa: E402
from stnkit.train.run import config_yaml, train  # noqa: E402

TINY = dict(model="cnn", dataset="mnist", epochs=1, train_size=64, val_size=32, test_size=32, batch_size=32)


def test_resume_before_the_first_checkpoint_continues_the_config_it_started_with(tmp_path):
    # a run stopped in its first epoch has its config.yaml (written at the start) and no checkpoint
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(config_yaml(TrainConfig(**TINY)))
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    saved = json.loads((out / "results.json").read_text())["config"]
    # not the command line's defaults (st-cnn on rts, 30 epochs): the run that was started
    assert (saved["model"], saved["dataset"], saved["epochs"], saved["train_size"]) == ("cnn", "mnist", 1, 64)


def test_resume_before_the_first_checkpoint_refuses_other_options(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(config_yaml(TrainConfig(**TINY)))
    with pytest.raises(ValueError, match=r"cannot resume .*config.yaml with different options \(lr"):
        train(TrainConfig(**TINY, lr=0.5), out, resume=True, quiet=True)


def test_overwrite_removes_stnkits_files_and_refuses_with_one_of_yours(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**TINY), out, quiet=True)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    mine = out / "checkpoints" / "my-notes.txt"
    mine.write_text("mine\n")
    with pytest.raises(FileExistsError, match=r"my-notes.txt is not one of them"):
        train(TrainConfig(**TINY), out, overwrite=True, quiet=True)
    assert mine.read_text() == "mine\n" and (out / "results.json").is_file()  # nothing was removed
    mine.unlink()
    train(TrainConfig(**TINY, seed=1), out, overwrite=True, quiet=True)
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 1
