"""Atomic file writes: a reader never sees a half-written file, a failure leaves none.

Every file stnkit writes goes through :func:`atomic_path` (or the helpers built on
it): the bytes go to ``PATH.part`` in the same directory, are flushed to disk
(``fsync``), and only then replace ``PATH`` (``os.replace``, atomic on POSIX and
Windows). A process killed at any moment leaves the old file or the new one, never a
torn one; a writer that raises leaves the old file and no ``.part``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some systems cannot open a directory: the rename still happened
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield ``PATH.part`` to write to; it becomes ``path`` on success and is removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def write_staged(path: str | os.PathLike, data: bytes) -> Path:
    """Write a new file inside a staging directory that its writer renames into place as a whole
    (an image folder, :func:`stnkit.data.folder.write_image_folder`): flushed to disk, not renamed."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def save_figure(fig, path: str | os.PathLike, **savefig_options) -> Path:
    """``fig.savefig(path)`` atomically (the format from ``path``'s suffix, as savefig would)."""
    path = Path(path)
    savefig_options.setdefault("format", path.suffix.lstrip(".") or None)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig_options)
    return path
