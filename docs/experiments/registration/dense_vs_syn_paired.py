"""CPU seconds of `stnkit register` (dense, the committed settings) against ANTs SyN on the test pairs of
`stnkit reproduce registration` (shapes2d: 16 pairs of 64x64; shapes3d: 6 of 32^3), paired and interleaved: in each of ROUNDS rounds every pair
is registered by both methods, the pairs in a shuffled order and the two methods in a random order per
pair; each pair's ratio (stnkit / SyN) is the median over rounds, and the result the median over pairs.
One thread (torch and ITK), nothing else running. Run from the repository root:

    OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 .venv/bin/python docs/experiments/registration/dense_vs_syn_paired.py [shapes3d]
"""

import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import load_test_set
from stnkit_experiments.registration import _syn_method, default_bench, stnkit_register

ROUNDS = 5
torch.set_num_threads(1)
dataset = sys.argv[1] if len(sys.argv) > 1 else "shapes2d"
out = Path("results/registration" if dataset == "shapes2d" else "results/registration-3d")
bench = default_bench(dataset)
settings = json.loads((out / "runs" / "register-tuning.json").read_text())["chosen"]["dense"]["settings"]
pairs = load_test_set(TrainConfig(dataset=bench.dataset, volume_size=bench.size), size=bench.test_pairs)
syn = _syn_method("ants-syn")
methods = {"stnkit dense": lambda p: stnkit_register(p, "dense", settings), "ANTs SyN": syn}
for fn in methods.values():  # one untimed call each
    fn(pairs.pair(0))
rng = random.Random(0)
cpu = {name: [[] for _ in range(len(pairs))] for name in methods}
for r in range(ROUNDS):
    order = list(range(len(pairs)))
    rng.shuffle(order)
    for i in order:
        pair = pairs.pair(i)
        names = list(methods)
        rng.shuffle(names)
        for name in names:
            c = time.process_time()
            methods[name](pair)
            cpu[name][i].append(time.process_time() - c)
    print(f"round {r + 1} of {ROUNDS} done", file=sys.stderr, flush=True)
ratios = [
    statistics.median(a) / statistics.median(b) for a, b in zip(cpu["stnkit dense"], cpu["ANTs SyN"], strict=True)
]
print(f"{len(pairs)} {dataset} test pairs (size {bench.size}), {ROUNDS} interleaved rounds, 1 thread")
for name in methods:
    print(f"{name}: median CPU s a pair {statistics.median(statistics.median(x) for x in cpu[name]):.4f}")
print(f"stnkit dense / ANTs SyN, median over pairs of the per-pair median ratio: {statistics.median(ratios):.3f}")
print(f"pairs where stnkit dense is faster: {sum(r < 1 for r in ratios)} of {len(ratios)}")
