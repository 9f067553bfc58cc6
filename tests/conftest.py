import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    # two xdist workers on two cores: one thread each avoids oversubscription
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("STNKIT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or STNKIT_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# the core tests run on every device present: the CPU, and CUDA when there is one
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


def _sigint_state() -> tuple[bool, bool] | None:
    """(SIGINT ignored by the process, SIGINT blocked in this thread) as the kernel sees them, which is what a
    subprocess inherits (Linux: /proc; None elsewhere)."""
    try:
        status = Path("/proc/thread-self/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGINT - 1)
    return bool(int(fields["SigIgn"], 16) & bit), bool(int(fields["SigBlk"], 16) & bit)


def _terminal_sigint() -> None:
    """SIGINT as a terminal gives it to a foreground command (default, unblocked), whatever this test run
    inherited: a run started in the background (`cmd &`, nohup) ignores SIGINT, and so would its children."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.fixture
def terminal_sigint():
    """The ``preexec_fn`` of a subprocess that models a command Ctrl-C'd from a terminal."""
    return _terminal_sigint


@pytest.fixture(autouse=True)
def _sigint_left_as_found():
    """A test that leaves SIGINT ignored or blocked fails, by name: every later subprocess of its worker
    would inherit it, and the Ctrl-C tests there would wait for a signal that never comes."""
    before = _sigint_state()
    yield
    after = _sigint_state()
    if before is None or after == before:
        return
    ignored, blocked = before
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK if blocked else signal.SIG_UNBLOCK, {signal.SIGINT})
    pytest.fail(f"this test left SIGINT (ignored, blocked) {after}, found {before}; restored", pytrace=False)


def _communicate_or_fail(proc, timeout: float = 120):
    """``proc.communicate()``, or, past ``timeout`` s, kill the run (left running, it would load the CPU for
    every test after it) and fail: the SIGINT sent to it was lost."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(
            f"the SIGINT was lost: the run went on for {timeout:g} s "
            f"(this worker's SIGINT (ignored, blocked): {_sigint_state()})"
        )


@pytest.fixture
def communicate_or_fail():
    """:func:`_communicate_or_fail`, for a test that sends a run SIGINT and waits for it to end."""
    return _communicate_or_fail
