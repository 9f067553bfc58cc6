"""Where a result came from: the commit of the code, and a digest of a model's weights."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import torch


@functools.cache
def git_commit() -> str | None:
    """The commit of the code this process runs (read once, at first use; ``-dirty`` if modified)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names and values, in name order): equal weights, equal digest."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
