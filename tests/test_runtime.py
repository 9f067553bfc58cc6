"""stnkit's workaround for the runtime under torch (stnkit._runtime)."""

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_importing_stnkit_makes_a_single_threaded_vector_math_call_first():
    # the first call of MKL's vector math must come from one thread (a 1-element tensor runs
    # inline): docs/experiments/runtime/vml_first_call.py measures what goes wrong otherwise
    code = (
        "import torch\n"
        "calls = []\n"
        "exp = torch.exp\n"
        "torch.exp = lambda x, *a, **k: calls.append(x.numel()) or exp(x, *a, **k)\n"
        "import stnkit\n"
        "print(calls)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": SRC}
    )
    assert out.stdout.strip() == "[1]", out.stdout + out.stderr
