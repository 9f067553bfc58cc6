"""Download full MNIST (the four standard gzip IDX files) with SHA-256 verification.

Each file streams to ``DIR/<name>.part`` while its SHA-256 is computed, is
checked against the known hash and parsed as IDX (magic number, dimensions,
length), and only then renamed into place with ``os.replace``. On any error or
Ctrl-C the partial file is deleted, so ``DIR`` never holds a file that did not
verify. Files already present with the right hash are skipped. Only ``urllib``
is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .._io import atomic_path
from .idx import IMAGES_MAGIC, LABELS_MAGIC, IdxError, read_idx

DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DEFAULT_DIR = "data/mnist"

# SHA-256 of the canonical files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes); their
# MD5s, as listed by torchvision, are f68b3c2dcbeaaa9fbdd348bbdeb94873,
# d53e105ee54ea40749a09fcbcd1e9432, 9fb629c4189551a2d022fa330f9573f3, ec29112dd5afa0611ce80d1b7f02629c.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

_BLOCK = 1 << 16


class DownloadError(OSError):
    """A file could not be downloaded or did not verify (nothing partial is left behind)."""


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes as lowercase hex, read in blocks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expected_magic(name: str) -> int | None:
    if "idx3" in name:
        return IMAGES_MAGIC
    if "idx1" in name:
        return LABELS_MAGIC
    return None


class _Progress:
    """Progress on stderr: a live line on a terminal, a few lines otherwise."""

    def __init__(self, name: str, total: int | None, stream=None):
        self.name, self.total = name, total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_time, self.last_step = 0.0, -1

    def __call__(self, done: int) -> None:
        mb = done / 1e6
        if self.total:
            frac = done / self.total
            msg = f"{self.name}: {mb:.1f} / {self.total / 1e6:.1f} MB ({100 * frac:.0f}%)"
            step = int(frac * 4)  # without a terminal: at 0, 25, 50, 75, 100%
        else:
            msg, step = f"{self.name}: {mb:.1f} MB", -1
        if self.tty:
            now = time.monotonic()
            if now - self.last_time > 0.1 or (self.total and done >= self.total):
                self.stream.write("\r" + msg)
                self.stream.flush()
                self.last_time = now
        elif step != self.last_step:
            self.stream.write(msg + "\n")
            self.last_step = step

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fetch(url: str, dest: Path, sha256: str, timeout: float, progress) -> None:
    # streams to DEST.part, checked, then renamed (atomic_path: an error or a kill leaves no DEST)
    with atomic_path(dest) as part:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (mirror chosen by the user)
        except urllib.error.HTTPError as err:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise DownloadError(f"{url}: cannot connect: {reason}") from None
        with response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            report = progress(dest.name, total) if progress else None
            h = hashlib.sha256()
            done = 0
            try:
                with open(part, "wb") as f:
                    while True:
                        block = response.read(_BLOCK)
                        if not block:
                            break
                        f.write(block)
                        h.update(block)
                        done += len(block)
                        if report:
                            report(done)
            except (OSError, http.client.HTTPException) as err:
                raise DownloadError(f"{url}: transfer failed after {done} bytes: {err}") from None
            finally:
                if report and hasattr(report, "close"):
                    report.close()
        if total is not None and done != total:
            raise DownloadError(f"{url}: connection closed after {done} of {total} bytes")
        got = h.hexdigest()
        if got != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 mismatch (corrupt or wrong file): expected {sha256}, got {got}")
        try:
            read_idx(part, _expected_magic(dest.name))
        except IdxError as err:
            raise DownloadError(f"{url}: not a valid IDX file: {err}") from None


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """``{name: sha256}`` from a ``sha256sum``-style file: ``HASH  NAME`` per line (``#`` comments)."""
    out = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'SHA256  NAME', got {line!r}")
        out[parts[1].lstrip("*").strip()] = parts[0]
    if not out:
        raise ValueError(f"{path}: no 'SHA256  NAME' lines found")
    return out


def download_mnist(
    directory: str | os.PathLike = DEFAULT_DIR,
    mirror: str = DEFAULT_MIRROR,
    *,
    checksums: dict[str, str] | None = None,
    timeout: float = 60.0,
    progress: bool | Callable = True,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Fetch the four MNIST files into ``directory`` and verify them; returns their paths.

    Args:
        directory: where the files go (created if needed).
        mirror: base URL; each file is fetched from ``mirror + name``.
        checksums: ``{file name: sha256}`` to fetch and verify (default: the four
            canonical MNIST files, :data:`MNIST_SHA256`).
        timeout: seconds before a stalled connection fails.
        progress: ``True`` for progress on stderr, ``False`` for none, or a
            factory ``progress(name, total_bytes_or_None)`` returning a callable
            ``report(bytes_done)``.
        log: where one-line messages go (default: stderr).

    Raises:
        DownloadError: a connection failed or dropped, the server answered with an
            error, or a file's SHA-256 or IDX structure did not verify. Nothing
            partial is left in ``directory``.
    """
    if not isinstance(mirror, str) or not mirror:
        raise ValueError(f"mirror must be a non-empty URL string, got {mirror!r}")
    checksums = MNIST_SHA256 if checksums is None else dict(checksums)
    for name, digest in checksums.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"checksums keys must be plain file names, got {name!r}")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest)):
            raise ValueError(f"checksums[{name!r}] must be a 64-digit hex SHA-256, got {digest!r}")
    if progress is True:
        progress = _Progress
    log = log or (lambda msg: print(msg, file=sys.stderr))
    base = mirror if mirror.endswith("/") else mirror + "/"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, digest in checksums.items():
        dest = directory / name
        if dest.is_file():
            if sha256_file(dest) == digest.lower():
                log(f"{name}: present and verified, skipped")
                paths.append(dest)
                continue
            log(f"{name}: present but its SHA-256 does not match, downloading again")
        _fetch(base + name, dest, digest, timeout, progress or None)
        log(f"{name}: downloaded and verified (sha256 {digest.lower()[:16]}...)")
        paths.append(dest)
    return paths


__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_MIRROR",
    "MNIST_SHA256",
    "DownloadError",
    "download_mnist",
    "read_checksums",
    "sha256_file",
]
