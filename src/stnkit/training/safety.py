"""What keeps a training run exact and safe: the pinned thread count of ``--deterministic``
runs, and checkpoints written atomically."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .._io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoints (``last.ckpt``, ``best-*.ckpt``) written through :func:`~stnkit._io.atomic_path`:
    a kill while one is written leaves the previous file whole."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


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
