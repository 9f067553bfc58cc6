"""The first threaded call of MKL's vector math, with and without stnkit's warm-up (stnkit._runtime).

Each trial is a fresh process with 2 intra-op threads: a small CNN's forward and backward pass
(which wakes the OpenMP threads), then the process's first ``Tensor.sqrt`` of 2,592 floats (the
size of a 32x1x9x9 weight: torch splits it between the two threads), compared with float64's
sqrt. Arm "plain" imports torch only; arm "stnkit" imports stnkit first, which warms VML up.
The two arms' trials run in pairs, at the same time: each loads the other's cores (one trial at
a time on an idle machine showed no error in 60), and both see the same load.

    .venv/bin/python docs/experiments/runtime/vml_first_call.py [TRIALS] > docs/experiments/runtime/vml_first_call.txt
"""

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[3] / "src")

CHILD = """
import sys
import torch
if sys.argv[1] == "stnkit":
    import stnkit  # noqa: F401
torch.set_num_threads(2)
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 32, 9, padding=4), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 7, padding=3), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
    torch.nn.Flatten(), torch.nn.Linear(1568, 10),
)
torch.nn.functional.cross_entropy(net(torch.rand(16, 1, 28, 28)), torch.zeros(16, dtype=torch.long)).backward()
# Adam's second moment after one step: 0.001 * grad**2
x = 0.001 * torch.randn(32, 1, 9, 9, generator=torch.Generator().manual_seed(1)).mul(1e-3).square()
root = x.sqrt()  # first: the float64 sqrt below is a VML call too
exact = x.double().sqrt()
err = ((root.double() - exact).abs() / exact).max().item()
print(err)
"""


def main(trials: int) -> None:
    errors = {"plain": [], "stnkit": []}
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "2", "PATH": ""}
    for _ in range(trials):
        procs = {
            arm: subprocess.Popen([sys.executable, "-c", CHILD, arm], stdout=subprocess.PIPE, text=True, env=env)
            for arm in errors
        }
        for arm, proc in procs.items():
            out, _ = proc.communicate()
            assert proc.returncode == 0, f"{arm} trial failed"
            errors[arm].append(float(out))
    import torch

    print(f"torch {torch.__version__}; {trials} fresh processes per arm, one of each arm at a time")
    print("a trial is 'off' when the first sqrt's largest relative error exceeds 1e-6 (float32's ulp is 1.2e-7)")
    for arm, errs in errors.items():
        off = [e for e in errs if e > 1e-6]
        worst = max(errs)
        print(f"{arm:7s} off in {len(off):3d} of {len(errs)}; largest relative error {worst:.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
