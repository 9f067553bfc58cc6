"""Resume policy: which checkpoint a run continues from, and which options may change when it does."""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig


def resume_checkpoint(out: Path, resume: bool | str, announce: bool = True) -> Path | None:
    """The checkpoint to resume from: ``resume`` itself if a path, else ``out/checkpoints/last.ckpt`` if any.

    A run killed before its first checkpoint has none: it starts from scratch (and says so
    unless ``announce`` is false), which is what it would have done uninterrupted."""
    if not resume:
        return None
    path = Path(resume) if isinstance(resume, str) else out / "checkpoints" / "last.ckpt"
    if path.is_file():
        return path
    if isinstance(resume, str):
        raise FileNotFoundError(f"--resume: checkpoint {path} does not exist")
    if announce:
        print(f"no checkpoint at {path}: starting from scratch")
    return None


# options that may change when a run is resumed; any other change would silently
# continue a different experiment
RESUME_MAY_CHANGE = frozenset(
    {
        "epochs",
        "patience",
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "num_workers",
        "test_size",
        "test_seed",
        "compile",
        "on_nonfinite",
    }
)


# where the hardware changes, the experiment stays the same
HARDWARE_OPTIONS = frozenset({"accelerator", "devices", "num_nodes", "strategy", "num_workers", "compile"})


def check_resumable(saved: TrainConfig, config: TrainConfig, path, may_change=RESUME_MAY_CHANGE) -> None:
    """Refuse to continue ``saved`` (the config in ``path``) as ``config`` if they differ outside ``may_change``."""
    diffs = [
        f"{k}: {v!r} in the checkpoint, {getattr(config, k)!r} now"
        for k, v in saved.to_dict().items()
        if k not in may_change and getattr(config, k) != v
    ]
    if diffs:
        raise ValueError(f"cannot resume {path} with different options ({'; '.join(diffs)}); use a new --out")
