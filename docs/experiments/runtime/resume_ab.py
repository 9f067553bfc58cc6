"""Kill-and-resume with and without stnkit's VML warm-up (stnkit._runtime), as tests/train/test_runs_exact.py
does it: a --deterministic run on 2 threads is sent SIGKILL 0.1 s after its first checkpoint, then resumed with
OMP_NUM_THREADS=1 (the checkpoint puts it back on 2 threads), and its final weights are compared with an
uninterrupted run's. Arm "off" replaces stnkit._runtime by a module whose warm-up does nothing, before stnkit is
imported. The arms alternate; a busy loop keeps one core loaded throughout, as the other test worker would.

    .venv/bin/python docs/experiments/runtime/resume_ab.py [CYCLES] > docs/experiments/runtime/resume_ab.txt
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[3] / "src")
TINY = "--dataset mnist --model cnn --epochs 3 --train-size 256 --val-size 64 --batch-size 16 --test-size 100"
ENTRY = """
import sys, types
if sys.argv[1] == "off":
    stub = types.ModuleType("stnkit._runtime")
    stub.warm_vector_math = lambda: None
    sys.modules["stnkit._runtime"] = stub
from stnkit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def command(arm: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", ENTRY, arm, "train", "--out", str(out), *TINY.split(), "--deterministic", *extra]


def env(threads: int) -> dict:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": str(threads)}


def digest(out: Path) -> str:
    """SHA-256 of the final weights (last.ckpt's state, in name order)."""
    import hashlib

    import torch

    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def killed_and_resumed(arm: str, out: Path) -> str:
    proc = subprocess.Popen(command(arm, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(2))
    while not (out / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.02)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(command(arm, out, "--resume"), capture_output=True, check=True, env=env(1))
    return digest(out)


def main(cycles: int) -> None:
    sys.path.insert(0, SRC)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            refs = []
            for i in range(2):
                subprocess.run(command("on", Path(tmp) / f"ref{i}"), capture_output=True, check=True, env=env(2))
                refs.append(digest(Path(tmp) / f"ref{i}"))
            assert refs[0] == refs[1], f"two uninterrupted runs disagree: {refs}"
            other = {"off": 0, "on": 0}
            for c in range(cycles):
                for arm in ("off", "on") if c % 2 == 0 else ("on", "off"):
                    if killed_and_resumed(arm, Path(tmp) / f"{arm}{c}") != refs[0]:
                        other[arm] += 1
                print(f"cycle {c + 1}: other weights so far {other}", file=sys.stderr, flush=True)
    finally:
        burner.kill()
    print(f"{cycles} kill-and-resume cycles per arm, one core kept busy; two uninterrupted runs agree")
    for arm, n in other.items():
        print(f"warm-up {arm:3s}: ended with other weights than the uninterrupted run in {n} of {cycles}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
