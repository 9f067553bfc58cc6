"""``download_mnist`` against a local HTTP server on 127.0.0.1 serving IDX files made here.

Bounded: the server listens on loopback only, every request has a 5 s timeout,
and the server is shut down after each test.
"""

import gzip
import hashlib
import http.server
import re
import socket
import threading

import numpy as np
import pytest

from stnkit.cli import main
from stnkit.data import MNIST_SHA256, DownloadError, download_mnist, load_digits, read_idx
from stnkit.data.download import read_checksums, sha256_file

NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_gz(array: np.ndarray, magic_code: int) -> bytes:
    header = bytes([0, 0, magic_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def make_files(n_train=300, n_test=50):
    """Four tiny MNIST-named gzip IDX files (big enough to stream in several blocks)."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = _idx_gz(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x08)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = _idx_gz(rng.integers(0, 10, n, dtype=np.uint8), 0x08)
    return files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """Serves ``files``; ``mode[name]`` = "drop" sends half the file and hangs up."""

    def __init__(self, files: dict[str, bytes], mode: dict[str, str] | None = None):
        self.files, self.mode, self.requests = files, mode or {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append(name)
                if name not in outer.files:
                    self.send_error(404, "Not Found")
                    return
                data = outer.files[name]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if outer.mode.get(name) == "drop":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve():
    servers = []

    def start(files, mode=None):
        servers.append(Server(files, mode))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def quiet(msg):
    pass


def test_download_verifies_and_is_loadable(tmp_path, serve):
    files = make_files()
    srv = serve(files)
    sums = {name: sha(data) for name, data in files.items()}
    paths = download_mnist(tmp_path / "mnist", srv.url, checksums=sums, timeout=5, progress=False, log=quiet)
    assert [p.name for p in paths] == list(files)
    for p in paths:
        assert p.read_bytes() == files[p.name]
    assert not list((tmp_path / "mnist").glob("*.part"))
    x, y = load_digits("train", data_dir=tmp_path / "mnist")
    assert x.shape == (300, 28, 28) and y.shape == (300,)
    assert sorted(srv.requests) == sorted(files)


def test_verified_files_are_skipped_and_bad_ones_fetched_again(tmp_path, serve):
    files = make_files()
    srv = serve(files)
    sums = {name: sha(data) for name, data in files.items()}
    download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=False, log=quiet)
    srv.requests.clear()
    logs = []
    download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=False, log=logs.append)
    assert srv.requests == []
    assert all("skipped" in line for line in logs) and len(logs) == 4
    (tmp_path / NAMES[1]).write_bytes(b"garbage")
    download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=False, log=quiet)
    assert srv.requests == [NAMES[1]]
    assert (tmp_path / NAMES[1]).read_bytes() == files[NAMES[1]]


def test_corrupt_file_is_rejected_and_not_kept(tmp_path, serve):
    files = make_files()
    sums = {name: sha(data) for name, data in files.items()}
    bad = bytearray(files[NAMES[2]])
    bad[100] ^= 0xFF
    srv = serve({**files, NAMES[2]: bytes(bad)})
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=False, log=quiet)
    assert not (tmp_path / NAMES[2]).exists()
    assert not list(tmp_path.glob("*.part"))
    assert (tmp_path / NAMES[0]).exists()  # the files before it verified and stay


def test_dropped_connection_leaves_nothing(tmp_path, serve):
    files = make_files()
    sums = {name: sha(data) for name, data in files.items()}
    srv = serve(files, mode={NAMES[0]: "drop"})
    with pytest.raises(DownloadError, match=r"closed after \d+ of \d+ bytes|transfer failed"):
        download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=False, log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_and_refused_connections(tmp_path, serve):
    files = make_files()
    sums = {name: sha(data) for name, data in files.items()}
    srv = serve({k: v for k, v in files.items() if k != NAMES[3]})
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=False, log=quiet)
    assert not (tmp_path / NAMES[3]).exists()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(DownloadError, match="cannot connect"):
        download_mnist(
            tmp_path / "b", f"http://127.0.0.1:{port}/", checksums=sums, timeout=5, progress=False, log=quiet
        )
    assert list((tmp_path / "b").iterdir()) == []


def test_right_hash_but_not_idx(tmp_path, serve):
    blob = gzip.compress(b"this is not an IDX file at all", mtime=0)
    srv = serve({"train-images-idx3-ubyte.gz": blob})
    with pytest.raises(DownloadError, match="not a valid IDX"):
        download_mnist(
            tmp_path, srv.url, checksums={"train-images-idx3-ubyte.gz": sha(blob)}, timeout=5, progress=False, log=quiet
        )
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_leaves_no_partial_file(tmp_path, serve):
    files = make_files()
    srv = serve(files)
    sums = {NAMES[0]: sha(files[NAMES[0]])}

    def progress(name, total):
        def report(done):
            raise KeyboardInterrupt

        return report

    with pytest.raises(KeyboardInterrupt):
        download_mnist(tmp_path, srv.url, checksums=sums, timeout=5, progress=progress, log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_progress_on_stderr(tmp_path, serve, capsys):
    files = make_files()
    srv = serve(files)
    sums = {NAMES[0]: sha(files[NAMES[0]])}
    download_mnist(tmp_path, srv.url, checksums=sums, timeout=5)
    err = capsys.readouterr().err
    assert f"{NAMES[0]}: " in err and "(100%)" in err and "downloaded and verified" in err


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="64-digit hex"):
        download_mnist(tmp_path, "http://127.0.0.1:1/", checksums={"a.gz": "abc"}, progress=False)
    with pytest.raises(ValueError, match="plain file names"):
        download_mnist(tmp_path, "http://127.0.0.1:1/", checksums={"../a.gz": "0" * 64}, progress=False)
    with pytest.raises(ValueError, match="mirror must be"):
        download_mnist(tmp_path, "", progress=False)


@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 7])  # empty, one short block, more than one 1 MiB block
def test_sha256_file(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == sha256_file(path)


def test_canonical_checksums(tmp_path, serve):
    assert tuple(MNIST_SHA256) == NAMES
    # lowercase hex as hashlib writes it (int(v, 16) would also take "0x", "_", spaces and a sign)
    assert all(re.fullmatch("[0-9a-f]{64}", v) for v in MNIST_SHA256.values()) and len(set(MNIST_SHA256.values())) == 4
    # and they are the default: files that are not MNIST fail against the first one
    srv = serve(make_files())
    with pytest.raises(DownloadError, match=f"SHA-256 mismatch .*expected {MNIST_SHA256[NAMES[0]]}"):
        download_mnist(tmp_path, srv.url, timeout=5, progress=False, log=quiet)
    assert srv.requests == [NAMES[0]] and not list(tmp_path.iterdir())


def test_cli_download(tmp_path, serve, capsys):
    files = make_files()
    srv = serve(files)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("# test files\n" + "".join(f"{sha(d)}  {n}\n" for n, d in files.items()))
    assert read_checksums(sums) == {n: sha(d) for n, d in files.items()}
    dest = tmp_path / "mnist"
    argv = ["data", "download", "--mirror", srv.url, "--dir", str(dest), "--sha256-file", str(sums), "--timeout", "5"]
    assert main([*argv, "--quiet"]) == 0
    assert "4 files verified" in capsys.readouterr().out
    assert read_idx(dest / NAMES[2]).shape == (50, 28, 28)
    # a corrupt file: exit code 1 and a clear message, nothing left behind
    sums.write_text(f"{'0' * 64}  extra-idx1-ubyte.gz\n")
    srv.files["extra-idx1-ubyte.gz"] = files[NAMES[1]]
    assert main([*argv, "--quiet"]) == 1
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not (dest / "extra-idx1-ubyte.gz").exists()
