"""Runs that repeat exactly: ``--deterministic`` twice, and a run killed at any moment then resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from stnkit.train.checkpoint import load_model  # noqa: E402
from stnkit.train.provenance import param_digest  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")
# 256 digits in batches of 16: 16 steps an epoch, about a second each epoch on one core
TINY_RUN = "--dataset mnist --model cnn --epochs 3 --train-size 256 --val-size 64 --batch-size 16 --test-size 100"
# the time, and the commit of the code (an edit to a tracked file between two runs makes it "-dirty")
TIME_FIELDS = ("fit_seconds", "git_commit")


def _env(threads: int) -> dict:
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stnkit", "train", "--out", str(out), *TINY_RUN.split(), "--deterministic", *extra]


def _run(out: Path, *extra: str, threads: int = 2) -> None:
    proc = subprocess.run(_train_cmd(out, *extra), capture_output=True, text=True, timeout=600, env=_env(threads))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _outcome(out: Path) -> tuple[str, str, dict]:
    """The digests of the best and the last weights, and results.json without its times and commit."""
    best, _ = load_model(out / "model.safetensors")
    last, _ = load_model(out / "checkpoints" / "last.ckpt")
    results = json.loads((out / "results.json").read_text())
    return param_digest(best), param_digest(last), {k: v for k, v in results.items() if k not in TIME_FIELDS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("exact") / "uninterrupted"
    _run(out)
    return _outcome(out)


def _burn_cpu() -> subprocess.Popen:
    """A process that keeps a core busy (for at most two minutes)."""
    code = "import time\nt = time.time()\nwhile time.time() - t < 120: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def test_deterministic_runs_agree_bit_for_bit_also_under_load(tmp_path, uninterrupted):
    burner = _burn_cpu()
    try:
        _run(tmp_path / "loaded")
    finally:
        burner.kill()
        burner.wait()
    again = _outcome(tmp_path / "loaded")
    assert again == uninterrupted
    assert again[2]["num_threads"] == 2


def _kill_when(out: Path, ready, delay: float, threads: int = 2) -> None:
    """Start the run, wait until ``ready(out)``, sleep ``delay`` s, then SIGKILL it."""
    proc = subprocess.Popen(_train_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(threads))
    try:
        deadline = time.time() + 300
        while not ready(out):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "results.json").exists(), "the run finished before the kill: make it longer"


@pytest.mark.parametrize(
    "when,ready,delay",
    [
        ("before the first checkpoint", lambda out: (out / "logs").exists(), 0.0),
        # intermittent until stnkit warmed MKL's vector math up at import (stnkit._runtime): the first
        # threaded sqrt of the resumed run's first Adam step was sometimes computed inexactly
        # (an epoch takes 0.35 s on an idle machine: killed 0.1 s after the first checkpoint, the run is in epoch 1)
        ("mid-epoch, after a checkpoint", lambda out: (out / "checkpoints" / "last.ckpt").exists(), 0.1),
    ],
)
def test_a_run_killed_and_resumed_ends_as_an_uninterrupted_one(tmp_path, uninterrupted, when, ready, delay):
    out = tmp_path / "killed"
    _kill_when(out, ready, delay)
    threads = 2  # a run without a checkpoint starts afresh, with the threads it is given
    if when == "before the first checkpoint":
        assert not (out / "checkpoints" / "last.ckpt").exists()
    else:
        import torch

        assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0, "killed after epoch 1"
        threads = 1  # the checkpoint's thread count wins: the run goes back to the one it started with
    _run(out, "--resume", threads=threads)
    assert _outcome(out) == uninterrupted


def test_the_order_of_an_epoch_is_the_same_at_every_pass():
    import torch
    from torch.utils.data import RandomSampler

    from stnkit.train.datamodule import SeededShuffle
    from stnkit.train.losses import epoch_seed

    seed = epoch_seed(0, 3, "shuffle")
    order = list(SeededShuffle(50, seed))
    assert order == list(SeededShuffle(50, seed)) != list(SeededShuffle(50, epoch_seed(0, 4, "shuffle")))
    sampler = SeededShuffle(50, seed)
    assert (
        list(sampler) == list(sampler) == list(RandomSampler(range(50), generator=torch.Generator().manual_seed(seed)))
    )
    assert sorted(order) == list(range(50))


def test_deterministic_refuses_a_time_budget():
    from stnkit.train import TrainConfig

    with pytest.raises(ValueError, match="deterministic cannot be combined with max_time"):
        TrainConfig(deterministic=True, max_time=5.0)


def test_ctrl_c_keeps_the_checkpoint_says_how_to_resume_and_exits_130(
    tmp_path, uninterrupted, terminal_sigint, communicate_or_fail
):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _train_cmd(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(2),
        preexec_fn=terminal_sigint,
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = communicate_or_fail(proc)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert f"Resume with: stnkit train --out {out} --resume" in stderr
    assert "holds the run at the end of epoch" in stderr and "Traceback" not in stderr
    assert not (out / "results.json").exists()
    _run(out, "--resume")
    assert _outcome(out) == uninterrupted


class TestNonFinite:
    """A NaN or inf loss, gradient or parameter stops training (or skips the step), naming the step."""

    @staticmethod
    def config(**kw):
        from stnkit.train import TrainConfig

        tiny = dict(model="cnn", dataset="mnist", train_size=96, val_size=48, test_size=48, batch_size=32, epochs=2)
        return TrainConfig(**{**tiny, **kw})

    def test_a_nan_loss_stops_training_naming_the_step_and_writes_no_checkpoint(self, tmp_path):
        from stnkit.train.run import train
        from stnkit.train.safety import NonFiniteError

        # Adam's first step moves every weight by about lr: 1e30 overflows the next forward pass
        with pytest.raises(NonFiniteError, match=r"training stopped at global step 1 \(epoch 0\): the loss is nan"):
            train(self.config(lr=1e30), tmp_path / "run", quiet=True)
        assert not list((tmp_path / "run").rglob("*.ckpt")) and not (tmp_path / "run" / "results.json").exists()

    def test_skip_skips_the_steps_and_keeps_finite_weights(self, tmp_path, capsys):
        from stnkit.train.run import train

        results = train(self.config(lr=1e30, on_nonfinite="skip"), tmp_path / "run", quiet=True)
        assert "skipping global step 1 (epoch 0): the loss is nan" in capsys.readouterr().out
        model, _ = load_model(tmp_path / "run" / "model.safetensors")
        assert all(p.isfinite().all() for p in model.parameters())
        assert results["epochs"] == 2

    def test_parameters_made_non_finite_stop_even_with_skip(self, tmp_path, monkeypatch):
        import torch

        from stnkit.train.run import train
        from stnkit.train.safety import NonFiniteError

        step = torch.optim.AdamW.step

        def step_to_inf(self, *args, **kwargs):  # a step with finite gradients that overflows a weight
            out = step(self, *args, **kwargs)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
            return out

        monkeypatch.setattr(torch.optim.AdamW, "step", step_to_inf)
        with pytest.raises(NonFiniteError, match=r"global step 1 \(epoch 0\): the step made parameters non-finite"):
            train(self.config(on_nonfinite="skip"), tmp_path / "run", quiet=True)
        assert not list((tmp_path / "run").rglob("*.ckpt"))

    def test_the_command_line_gives_one_line_and_a_non_zero_status(self, tmp_path):
        out = tmp_path / "run"
        cmd = [sys.executable, "-m", "stnkit", "train", "--out", str(out), "--model", "cnn", "--dataset", "mnist"]
        cmd += ["--train-size", "96", "--val-size", "48", "--test-size", "48", "--batch-size", "32", "--epochs", "1"]
        proc = subprocess.run([*cmd, "--lr", "1e30"], capture_output=True, text=True, timeout=300, env=_env(1))
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith("stnkit: training stopped at global step 1 (epoch 0)")
        assert "Traceback" not in proc.stderr

    def test_no_checkpoint_with_non_finite_weights_is_written(self, tmp_path):
        import torch

        from stnkit.train.safety import AtomicCheckpointIO, NonFiniteError

        with pytest.raises(NonFiniteError, match="non-finite weights in model.w"):
            AtomicCheckpointIO().save_checkpoint(
                {"state_dict": {"model.w": torch.tensor([1.0, float("nan")])}}, tmp_path / "x.ckpt"
            )
        assert not list(tmp_path.iterdir())

    def test_old_configs_load_with_stop(self):
        from stnkit.train import TrainConfig

        assert TrainConfig.from_dict({}).on_nonfinite == "stop"
        with pytest.raises(ValueError, match="on_nonfinite must be one of 'stop', 'skip', got 'ignore'"):
            TrainConfig(on_nonfinite="ignore")
