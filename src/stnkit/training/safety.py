"""Callbacks that keep a training run exact and safe: the pinned thread count of
``--deterministic`` runs."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


class PinThreads(pl.Callback):
    """Keep torch's intra-op thread count that of the run's first start (``--deterministic``).

    CPU kernels split their sums by thread, so the same run with 1 and 2 threads ends
    with different weights. A fresh run keeps the count it starts with (by default the
    CPUs the process may use); the count is stored in the checkpoints, and a resumed run
    goes back to it, wherever it resumes.
    """

    def __init__(self, num_threads: int | None = None):
        self.num_threads = num_threads or torch.get_num_threads()
        torch.set_num_threads(self.num_threads)

    def state_dict(self) -> dict:
        return {"num_threads": self.num_threads}

    def load_state_dict(self, state_dict: dict) -> None:
        self.num_threads = int(state_dict["num_threads"])
        torch.set_num_threads(self.num_threads)
