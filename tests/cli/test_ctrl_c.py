"""A Ctrl-C at any moment of a command, from the first import on, ends in one line and status 130."""

import signal
import subprocess
import sys
import time

import pytest

ENTRY = "import sys, _stnkit_entry; sys.exit(_stnkit_entry.main())"  # what the `stnkit` script runs


@pytest.mark.parametrize("after", [0.3, 1.0, 2.5], ids=lambda s: f"after {s} s")
def test_ctrl_c_while_loading_or_starting_says_interrupted_without_a_traceback(
    tmp_path, after, communicate_or_fail, terminal_sigint
):
    # a training long enough that the signal always lands before it ends: while torch loads (the first
    # second), while Lightning and the data load, or in the first steps
    cmd = [sys.executable, "-c", ENTRY, "train", "--dataset", "rts", "--model", "cnn", "--epochs", "50"]
    proc = subprocess.Popen(
        cmd + ["--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=terminal_sigint,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = communicate_or_fail(proc)
    text = err.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1].startswith("stnkit: interrupted"), text


def test_the_entry_point_leaves_an_ignored_sigint_ignored():
    # where the caller ignores SIGINT (`nohup`, a background job of a script), so does stnkit
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import _stnkit_entry, stnkit.cli, sys;"
        "stnkit.cli.main = lambda: print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN) or 0;"
        "sys.exit(_stnkit_entry.main())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_a_ctrl_c_that_lands_in_a_finaliser_is_not_lost(terminal_sigint):
    # the garbage collector runs an object's __del__ at any moment; a Ctrl-C during it is "ignored" by
    # Python (printed, then dropped): the command must still end with `stnkit: interrupted`, not run on,
    # and at once, even where the main thread then sleeps (the Ctrl-C sent again must wake it)
    code = (
        "import os, signal, sys, threading, time, _stnkit_entry, stnkit.cli\n"
        "class Slow:\n"
        "    def __del__(self):\n"
        "        t = time.time()\n"
        "        while time.time() - t < 1.0: pass\n"
        "def busy():\n"
        "    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "    Slow()\n"
        "    time.sleep(60)\n"
        "    print('ran on')\n"
        "    return 0\n"
        "stnkit.cli._main = lambda argv: busy()\n"
        "sys.exit(_stnkit_entry.main())\n"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=terminal_sigint
    )
    assert done.returncode == 130 and "ran on" not in done.stdout, (done.stdout, done.stderr)
    assert done.stderr.strip() == "stnkit: interrupted", done.stderr
    assert time.monotonic() - start < 40, "the Ctrl-C sent again waited for the main thread's sleep to end"
