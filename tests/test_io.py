"""Every file stnkit writes is written atomically: the old file or the new one, never a torn one."""

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stnkit._io import atomic_path, atomic_write_bytes, atomic_write_text, save_figure

SRC = Path(__file__).resolve().parents[1] / "src" / "stnkit"


def test_a_writer_that_raises_mid_write_leaves_the_old_file_and_no_part(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="disk gone"), atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half of the ne")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    # and a new file that fails is not created at all
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError
    assert not (tmp_path / "new.bin").exists()


def test_a_kill_at_any_moment_leaves_a_whole_file(tmp_path):
    path = tmp_path / "big.bin"
    a, b = b"a" * 4_000_000, b"b" * 6_000_000
    atomic_write_bytes(path, a)
    code = (
        "import sys\nfrom stnkit._io import atomic_write_bytes\n"
        "a, b = b'a' * 4_000_000, b'b' * 6_000_000\n"
        "while True:\n    atomic_write_bytes(sys.argv[1], b)\n    atomic_write_bytes(sys.argv[1], a)\n"
    )
    for delay in (0.3, 0.45, 0.6, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env={"PYTHONPATH": str(SRC.parent)})
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert path.read_bytes() in (a, b)


def test_save_figure_writes_the_format_of_the_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    out = save_figure(fig, tmp_path / "f.png", dpi=20)
    plt.close(fig)
    assert out.read_bytes().startswith(b"\x89PNG") and not list(tmp_path.glob("*.part"))


def test_checkpoints_are_written_atomically(tmp_path):
    pytest.importorskip("lightning")
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from stnkit.train.safety import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def torn(self, checkpoint, p, storage_options=None):
        Path(p).write_bytes(b"PK\x03\x04 torn")
        raise OSError("killed")

    original = TorchCheckpointIO.save_checkpoint
    TorchCheckpointIO.save_checkpoint = torn
    try:
        with pytest.raises(OSError, match="killed"):
            io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    finally:
        TorchCheckpointIO.save_checkpoint = original
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert not list(tmp_path.glob("*.part"))


# calls that write a file, by name: each must write to a path that atomic_path yielded
_WRITERS = {"write_text", "write_bytes", "savefig", "save_file", "save", "savez", "savez_compressed", "tofile"}


def _writes(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in _WRITERS:
        return True
    if name in ("open", "ZipFile", "GzipFile"):
        modes = [a for a in node.args[1:2] if isinstance(a, ast.Constant)]
        modes += [k.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
        return any(isinstance(m.value, str) and set(m.value) & set("wax+") for m in modes)
    return False


def _inside_atomic_path(parents: list[ast.AST]) -> bool:
    for node in parents:
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) == (
                    "atomic_path"
                ):
                    return True
    return False


def test_src_writes_files_only_through_atomic_path():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "_io.py":
            continue

        def visit(node, parents, path=path):
            if isinstance(node, ast.Call) and _writes(node) and not _inside_atomic_path(parents):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)[:80]}")
            for child in ast.iter_child_nodes(node):
                visit(child, [*parents, node])

        visit(ast.parse(path.read_text()), [])
    assert not offenders, "direct writes (use stnkit._io):\n" + "\n".join(offenders)
