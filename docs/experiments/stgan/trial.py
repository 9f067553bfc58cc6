"""One validation trial of `stnkit reproduce stgan`: the same command, the rendered scenes cached on disk.

    OMP_NUM_THREADS=1 PYTHONPATH=src python docs/experiments/stgan/trial.py --out runs/stgan-trials/NAME ARGS...

runs exactly `stnkit reproduce stgan --out runs/stgan-trials/NAME ARGS...` at one torch thread, except that
the scenes (which depend only on the size, the perturbation and the split sizes) are rendered once and kept
in runs/stgan-trials/data-*.pt (scratch), so that a trial does not spend minutes rendering them again.
Choices are made on the validation errors that each row logs (`val error (px)`); see README.md.
"""

import sys
from pathlib import Path

import torch

from stnkit.cli import main
from stnkit_experiments import stgan

render = stgan.load_data


def cached(config):
    key = f"{config.size}-{config.perturb:g}-{config.train_size}-{config.val_size}-{config.test_size}"
    path = Path("runs/stgan-trials") / f"data-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    data = render(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


if __name__ == "__main__":
    torch.set_num_threads(1)
    stgan.load_data = cached
    sys.exit(main(["reproduce", "stgan", *sys.argv[1:]]))
