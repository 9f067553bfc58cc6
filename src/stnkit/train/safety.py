"""What keeps a training run exact and safe: the pinned thread count of ``--deterministic``
runs, and checkpoints written atomically."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .._io import atomic_path


class NonFiniteError(RuntimeError):
    """Training met a NaN or inf loss, gradient or parameter (``TrainConfig.on_nonfinite``)."""


def nonfinite_names(tensors: dict) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` that hold a NaN or an inf.

    Called every training step: one reduction and one host sync for all tensors
    (the names are looked up only when something is not finite).
    """
    floats = {k: v for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point()}
    if not floats:
        return []
    device = next(iter(floats.values())).device
    flags = torch.stack([v.detach().isfinite().all().to(device) for v in floats.values()])
    if bool(flags.all()):
        return []
    return [k for k, ok in zip(floats, flags.tolist()) if not ok]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoints (``last.ckpt``, ``best-*.ckpt``) written through :func:`~stnkit._io.atomic_path`:
    a kill while one is written leaves the previous file whole. Weights with a NaN or an
    inf are never written (:class:`NonFiniteError`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        bad = nonfinite_names(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(f"not writing {path}: non-finite weights in {', '.join(bad[:3])}")
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train()``: the message says where the run stands and the command that resumes it."""


class NoteInterrupt(pl.Callback):
    """Remember a Ctrl-C (Lightning stops the fit, then exits), and where it came."""

    def __init__(self):
        self.where: tuple[int, int] | None = None  # (epoch, global step)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt):
            self.where = (int(trainer.current_epoch), int(trainer.global_step))


def interrupted_message(out, where: tuple[int, int] | None, last, after_fit: bool = False) -> str:
    """What a Ctrl-C in ``where`` leaves in ``out`` (``last``: the resume checkpoint, if any) and how to
    resume; ``after_fit``: it came once training had finished, while the test set was evaluated."""
    if where is None:  # a Ctrl-C as Lightning finished or tore down, before it could note where
        if last is not None and last.is_file():
            done = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
            kept = f"{last} holds the run at the end of epoch {done}"
        else:
            kept = "no checkpoint was written"
        return f"interrupted: {kept}. Resume with: stnkit train --out {out} --resume"
    epoch, step = where
    if after_fit and last is not None and last.is_file():
        done = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
        return (
            f"interrupted after training, while evaluating: {last} holds the run at the end of epoch {done}, "
            f"and the resume only evaluates it. Resume with: stnkit train --out {out} --resume"
        )
    if last is not None and last.is_file():
        done = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
        kept = f"{last} holds the run at the end of epoch {done}; epoch {done + 1} will run again from its start"
    else:
        kept = "no epoch had finished, so no checkpoint was written; the run will start again"
    return f"interrupted in epoch {epoch} (global step {step}): {kept}. Resume with: stnkit train --out {out} --resume"
