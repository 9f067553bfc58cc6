"""Bad input at the real command line: one line naming the problem, exit status != 0, no traceback, no output.

Each case runs ``python -m stnkit ...`` in its own process (two at a time) in a directory of
prepared files: a good model, hostile and broken checkpoints, broken datasets and images.
"""

import gzip
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")
PIL = pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from stnkit.cli import main  # noqa: E402
from stnkit.data import write_idx  # noqa: E402
from stnkit.train import TrainConfig  # noqa: E402
from stnkit.train.checkpoint import build_model, save_model  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"


class _Evil:
    """Unpickling this would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _files(root: Path) -> None:
    """The inputs every case reads: written once, never changed by a case."""
    config = TrainConfig(model="cnn", dataset="mnist")
    model = build_model(config)
    save_model(root / "good.safetensors", model, config)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"config": config.to_dict()}, "state_dict": state}, root / "cnn.ckpt")
    torch.save({"state_dict": {}, "payload": _Evil(root / "pwned")}, root / "evil.ckpt")
    (root / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(2048))
    (root / "trunc.safetensors").write_bytes((root / "good.safetensors").read_bytes()[:300])
    (root / "ckptdir.ckpt").mkdir()
    (root / "afile").write_text("a regular file\n")
    digits = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(root / "imgs.idx", digits)
    write_idx(root / "labels5.idx", np.array([0, 1, 2, 3, 4], np.uint8))
    write_idx(root / "labels4.idx", np.array([0, 1, 2, 3], np.uint8))
    write_idx(root / "labels_bad.idx", np.array([0, 1, 2, 3, 12], np.uint8))
    (root / "trunc.idx").write_bytes((root / "imgs.idx").read_bytes()[:1000])
    huge = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 1 << 30, 1 << 12, 1 << 12)
    (root / "huge.idx").write_bytes(huge + bytes(64))
    Image.fromarray(digits[0]).save(root / "digit.png")
    png = (root / "digit.png").read_bytes()
    (root / "corrupt.png").write_bytes(png[:40] + b"\x00garbage" * 20)
    Image.new("L", (2, 2)).save(root / "tiny.png")
    Image.new("CMYK", (28, 28)).save(root / "cmyk.jpg")
    # hostile files of round two: a zip bomb, a gzip IDX bomb, special files, NaN weights, a huge config
    with zipfile.ZipFile(root / "bomb.ckpt", "w") as z:  # 200 KB on disk, 200 MB inflated
        z.writestr("archive/version", b"3\n")
        info = zipfile.ZipInfo("archive/data.pkl")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            for _ in range(200):
                f.write(bytes(1 << 20))
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 2_000_000, 28, 28)  # 1.57 GB declared
    with gzip.open(root / "bomb.idx.gz", "wb", compresslevel=1) as f:
        f.write(header)
        for _ in range(8):
            f.write(bytes(1 << 20))
    os.mkfifo(root / "fifo.ckpt")
    os.mkfifo(root / "fifo.png")
    os.symlink("/dev/zero", root / "zero.ckpt")
    nan = build_model(config)
    with torch.no_grad():
        next(iter(nan.parameters())).fill_(float("nan"))
    save_model(root / "nan.safetensors", nan, config)
    from safetensors.torch import save_file

    huge = {**config.to_dict(), "model": "st-cnn", "num_transformers": 100_000}
    save_file(dict(model.state_dict()), str(root / "huge.safetensors"), metadata={"stnkit_config": json.dumps(huge)})
    (root / "userrun" / "logs").mkdir(parents=True)  # a run folder where the user keeps notes of their own
    (root / "userrun" / "logs" / "notes.txt").write_text("mine\n")
    (root / "userrun" / "results.json").write_text("{}\n")


G, E, C = "fx/good.safetensors", "fx/evil.ckpt", "fx/cnn.ckpt"
T = ["--epochs", "1", "--train-size", "64", "--val-size", "32", "--test-size", "32", "--limit-train-batches", "1"]

# (id, arguments after `stnkit`, regex the one line on stderr must match)
CASES = [
    # checkpoints: missing, a directory, hostile, corrupt, of another kind
    ("eval-missing-ckpt", ["eval", "fx/nope.ckpt"], r"checkpoint fx/nope.ckpt does not exist"),
    ("eval-dir-ckpt", ["eval", "fx/ckptdir.ckpt"], r"fx/ckptdir.ckpt is a directory"),
    ("eval-evil", ["eval", E], r"evil.ckpt is not a stnkit checkpoint .*will not unpickle it"),
    ("eval-random", ["eval", "fx/random.ckpt"], r"random.ckpt is not a stnkit checkpoint"),
    ("eval-trunc-safetensors", ["eval", "fx/trunc.safetensors"], r"trunc.safetensors is not a readable safetensors"),
    ("show-evil", ["show", E], r"evil.ckpt is not a stnkit checkpoint .*will not unpickle it"),
    ("predict-evil", ["predict", E, "fx/digit.png"], r"evil.ckpt is not a stnkit checkpoint .*will not unpickle it"),
    ("train-resume-evil", ["train", "--out", "new", "--resume", E], r"evil.ckpt is not a stnkit checkpoint"),
    ("train-resume-missing", ["train", "--out", "new", "--resume", "fx/nope.ckpt"], r"nope.ckpt does not exist"),
    ("train-resume-other-model", ["train", "--out", "new", "--model", "fcn", "--resume", C], r"cannot resume .*model"),
    ("train-resume-safetensors", ["train", "--out", "new", "--resume", G], r"holds only weights"),
    # datasets given as files
    ("eval-images-missing", ["eval", G, "--images", "fx/nope.idx", "--labels", "fx/labels5.idx"], r"nope.idx"),
    ("eval-images-no-labels", ["eval", G, "--images", "fx/imgs.idx"], r"--images needs --labels"),
    ("eval-labels-range", ["eval", G, "--images", "fx/imgs.idx", "--labels", "fx/labels_bad.idx"], r"0\.\.9"),
    ("eval-count-mismatch", ["eval", G, "--images", "fx/imgs.idx", "--labels", "fx/labels4.idx"], r"match 5 images"),
    ("eval-images-truncated", ["eval", G, "--images", "fx/trunc.idx", "--labels", "fx/labels5.idx"], r"truncated"),
    ("eval-images-huge", ["eval", G, "--images", "fx/huge.idx", "--labels", "fx/labels5.idx"], r"declare .* bytes"),
    ("eval-images-are-labels", ["eval", G, "--images", "fx/labels5.idx", "--labels", "fx/labels5.idx"], r"magic"),
    ("eval-images-dir", ["eval", G, "--images", "fx", "--labels", "fx/labels5.idx"], r"fx is a directory"),
    # unknown names
    ("eval-unknown-dataset", ["eval", G, "--dataset", "svhn"], r"svhn"),
    ("train-unknown-model", ["train", "--out", "new", "--model", "resnet"], r"--model must be one of .*resnet"),
    ("train-unknown-dataset", ["train", "--out", "new", "--dataset", "svhn"], r"--dataset must be one of .*svhn"),
    ("train-unknown-transform", ["train", "--out", "new", "--transform", "warp"], r"--transform must be one of"),
    ("data-make-unknown", ["data", "make", "svhn", "--split", "test", "--out", "new"], r"invalid choice: 'svhn'"),
    ("unknown-command", ["fly"], r"invalid choice: 'fly'"),
    # zero, negative and absurd sizes and counts
    ("train-epochs-0", ["train", "--out", "new", "--epochs", "0"], r"--epochs must be an int in \[1, 1000000\], got 0"),
    ("train-batch-negative", ["train", "--out", "new", "--batch-size", "-4"], r"--batch-size must be .* got -4"),
    ("train-batch-absurd", ["train", "--out", "new", "--batch-size", str(10**12)], r"--batch-size must be an int in"),
    ("train-val-size-0", ["train", "--out", "new", "--val-size", "0"], r"--val-size must be a positive int"),
    ("train-val-size-too-big", ["train", "--out", "new", "--val-size", "100000"], r"val_size must be in \[0, \d+\)"),
    (
        "train-train-size-too-big",
        ["train", "--out", "new", "--dataset", "mnist", "--train-size", "100000"],
        r"train_size must be at most \d+ \(the training digits left after val_size 500\)",
    ),
    ("train-test-size-negative", ["train", "--out", "new", "--test-size", "-5"], r"--test-size must be"),
    ("data-make-n-absurd", ["data", "make", "r", "--split", "test", "--n", str(10**12), "--out", "new"], r"n must be"),
    ("data-make-n-0", ["data", "make", "r", "--split", "test", "--n", "0", "--out", "new"], r"positive integer"),
    ("show-n-0", ["show", G, "--n", "0"], r"--n must be an int in \[1, 64\]"),
    ("demo-n-absurd", ["demo", "--n", str(10**12), "--out", "new/demo.png"], r"--n must be an int in \[1, 64\]"),
    ("bench-repeat-0", ["bench", "--quick", "--repeat", "0"], r"--repeat must be >= 1"),
    # images for predict
    ("predict-missing-png", ["predict", G, "fx/nope.png"], r"nope.png"),
    ("predict-corrupt-png", ["predict", G, "fx/digit.png", "fx/corrupt.png"], r"corrupt.png is not a readable image"),
    ("predict-tiny-png", ["predict", G, "fx/tiny.png"], r"tiny.png: image is 2x2 pixels"),
    ("predict-cmyk", ["predict", G, "fx/cmyk.jpg"], r"cmyk.jpg: image has 4 channels in mode CMYK"),
    ("predict-dir", ["predict", G, "fx"], r"fx is a directory"),
    # directories and files in the wrong place
    ("train-out-under-file", ["train", "--out", "fx/afile/run", *T], r"fx/afile/run: Not a directory"),
    ("train-data-dir-missing", ["train", "--out", "new", "--data-dir", "fx/nope", *T], r"--data-dir fx/nope"),
    (
        "eval-out-under-file",
        ["eval", G, "--out", "fx/afile/ev", "--images", "fx/imgs.idx", "--labels", "fx/labels5.idx"],
        r"Not a directory",
    ),
    (
        "data-make-out-under-file",
        ["data", "make", "r", "--split", "test", "--n", "4", "--out", "fx/afile/d"],
        r"Not a directory",
    ),
    ("data-show-data-dir-missing", ["data", "show", "r", "--data-dir", "fx/nope", "--out", "new.png"], r"fx/nope"),
    ("summarize-missing", ["summarize", "fx/nope"], r"fx/nope"),
    # round two: no hang, no overflow, no option silently ignored, no user file deleted
    ("train-devices-100", ["train", "--out", "new", "--devices", "100", *T], r"devices must be at most \d+"),
    (
        "train-num-transformers-10000",
        ["train", "--out", "new", "--num-transformers", "10000"],
        r"--num-transformers must be an int in \[1, 64\]",
    ),
    ("train-num-workers-1000", ["train", "--out", "new", "--num-workers", "1000"], r"--num-workers must be an int in"),
    ("train-max-time-huge", ["train", "--out", "new", "--max-time", "1e308"], r"--max-time must be a finite number in"),
    ("train-limit-0", ["train", "--out", "new", "--limit-train-batches", "0"], r"--limit-train-batches must be > 0"),
    ("train-out-empty", ["train", "--out", ""], r"--out must name a run directory"),
    (
        "train-tps-for-cnn",
        ["train", "--out", "new", "--model", "cnn", "--transform", "tps"],
        r"--transform is not read",
    ),
    ("train-image-size-no-data", ["train", "--out", "new", "--image-size", "32", "32"], r"needs --data DIR"),
    ("show-out-dir", ["show", G, "--out", "fx"], r"--out must be a \.png file path"),
    ("export-out-dir", ["export", G, "--out", "fx"], r"--out must be a file path"),
    ("export-out-exists", ["export", G, "--out", "fx/afile"], r"--out fx/afile exists"),
    ("eval-zip-bomb", ["eval", "fx/bomb.ckpt"], r"bomb.ckpt.*(inflates|zip bomb)"),
    ("eval-gzip-idx-bomb", ["eval", G, "--images", "fx/bomb.idx.gz", "--labels", "fx/labels5.idx"], r"bomb.idx.gz"),
    ("eval-fifo-ckpt", ["eval", "fx/fifo.ckpt"], r"fifo.ckpt is a FIFO"),
    ("eval-devzero-ckpt", ["eval", "fx/zero.ckpt"], r"zero.ckpt is a character device"),
    ("predict-fifo-image", ["predict", G, "fx/fifo.png"], r"fifo.png"),
    ("predict-nan-weights", ["predict", "fx/nan.safetensors", "fx/digit.png"], r"NaN or inf"),
    ("eval-huge-config", ["eval", "fx/huge.safetensors"], r"num_transformers"),
    (
        "train-overwrite-keeps-user-files",
        ["train", "--out", "fx/userrun", "--overwrite", *T],
        r"--overwrite removes only files stnkit wrote, and fx/userrun/logs/notes.txt is not one of them",
    ),
]


# One interpreter per worker loads stnkit, torch and Lightning once, then forks a fresh process per
# case that runs ``python -m stnkit ARGS`` (runpy, as the interpreter does) with its own working
# directory, stdout and stderr files and exit status; an uncaught exception is printed as the
# interpreter would. This keeps 45 cases at a fraction of a second each instead of 3-5 s of imports.
_SERVER = r"""
import json, os, resource, runpy, sys, traceback
import stnkit.cli, stnkit.cli.train, stnkit.train.run, stnkit.data, PIL.Image  # preloaded once
jobs = json.load(open(sys.argv[1]))
codes = []
for job in jobs:
    pid = os.fork()
    if pid == 0:
        # every case within the issue's limits: 8 GB of memory (address space), 60 s of CPU
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
        os.chdir(job["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["stnkit", *job["argv"]]
        try:
            runpy.run_module("stnkit", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
            if not isinstance(err.code, (int, type(None))):
                print(err.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
json.dump(codes, open(sys.argv[2], "w"))
"""


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _serve(root: Path, cases: list, worker: int) -> list[int]:
    jobs = [
        {"cwd": str(root / n), "argv": a, "stdout": str(root / f"{n}.out"), "stderr": str(root / f"{n}.err")}
        for n, a, _ in cases
    ]
    (root / f"jobs{worker}.json").write_text(json.dumps(jobs))
    cmd = [sys.executable, "-c", _SERVER, str(root / f"jobs{worker}.json"), str(root / f"codes{worker}.json")]
    subprocess.run(cmd, env=_env(), check=True, timeout=600)
    return json.loads((root / f"codes{worker}.json").read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "fx").mkdir()
    _files(root / "fx")
    before = {}
    for name, _, _ in CASES:
        (root / name).mkdir()
        os.symlink(root / "fx", root / name / "fx")
        before[name] = _listing(root / "fx") + _listing(root / name)
    halves = [CASES[0::2], CASES[1::2]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = list(pool.map(lambda w: _serve(root, halves[w], w), (0, 1)))
    out = {}
    for half, half_codes in zip(halves, codes):
        for (name, _, _), code in zip(half, half_codes):
            after = _listing(root / "fx") + _listing(root / name)
            stderr = (root / f"{name}.err").read_text()
            out[name] = (code, stderr, before[name], after)
    return out


def test_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(results, case):
    name, argv, pattern = case
    code, stderr, before, after = results[name]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert before == after  # no partial output (and no marker file from a hostile checkpoint)
    assert "weights_only=False" not in stderr and "unexpected" not in stderr  # bad input, not a bug


@pytest.mark.parametrize("argv", [["eval", E], ["train", "--out", "new", "--batch-size", "0"]])
def test_fresh_interpreter_gives_the_same_line(tmp_path, argv):
    """The same through ``python -m stnkit`` started from scratch (no preloaded interpreter)."""
    (tmp_path / "fx").mkdir()
    _files(tmp_path / "fx")
    before = _listing(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "stnkit", *argv], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 1 and proc.stderr.startswith("stnkit: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and _listing(tmp_path) == before


def test_debug_shows_the_traceback(tmp_path):
    cmd = [sys.executable, "-m", "stnkit", "--debug", "eval", str(tmp_path / "nope.ckpt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_unexpected_error_is_one_line_with_a_hint(monkeypatch, capsys):
    import stnkit.demo

    def broken(*args, **kwargs):
        raise RuntimeError("something\ninternal")

    monkeypatch.setattr(stnkit.demo, "run_demo", broken)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: something internal" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        main(["--debug", "demo"])


@pytest.mark.parametrize("argv", [["--debug", "demo"], ["demo", "--debug"]])
def test_debug_may_stand_before_or_after_the_command(monkeypatch, argv):
    import stnkit.demo

    def broken(*args, **kwargs):
        raise RuntimeError("internal")

    monkeypatch.setattr(stnkit.demo, "run_demo", broken)
    with pytest.raises(RuntimeError, match="internal"):
        main(argv)


def test_a_closed_pipe_ends_quietly(tmp_path):
    # `stnkit data make ... | head -0`: the reader is gone before stnkit writes its line
    argv = ["data", "make", "r", "--split", "test", "--n", "4", "--out", str(tmp_path / "d")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stnkit", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and stderr == "", stderr
