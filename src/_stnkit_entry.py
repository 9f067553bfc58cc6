"""The ``stnkit`` command's entry point: a Ctrl-C at any moment ends in one line, not a traceback or a hang.

Importing stnkit loads torch (a second or more); a SIGINT then would interrupt an import and print
Python's traceback. This module, which imports nothing heavy, catches SIGINT until :func:`stnkit.cli.main`
is loaded, then gives Ctrl-C back to Python (where the command line turns it into ``stnkit: interrupted``).

From then on a Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread is, and where that is a
finaliser (an object's ``__del__``, a weakref callback, run by the garbage collector at any moment)
Python prints "Exception ignored in ..." and goes on: the Ctrl-C would be lost and a training would run
on. While the command runs, :func:`_resend_lost_interrupt` sends such a swallowed Ctrl-C again, so that
it lands in the code the finaliser interrupted; once the command has returned (and while Python shuts
down) Python's own behaviour is back.
"""

import os
import signal
import sys
import threading
import time

_running = False  # True while the command runs: only then is a swallowed Ctrl-C sent again


def _interrupted_while_loading(signum, frame):  # noqa: ARG001 - a signal handler's signature
    os.write(2, b"stnkit: interrupted\n")
    os._exit(130)  # nothing is written yet: nothing to clean up


def _send_interrupt_again():
    time.sleep(0.01)  # the finaliser has ended (or another swallows it: then it is sent again)
    if not _running:
        return
    main = threading.main_thread()
    if hasattr(signal, "pthread_kill") and main.ident is not None:
        signal.pthread_kill(main.ident, signal.SIGINT)  # to the main thread: wakes a sleep or a blocking read
    else:
        signal.raise_signal(signal.SIGINT)  # Windows: Python's handler sets the event a sleep waits on


def _resend_lost_interrupt(unraisable, _report=sys.unraisablehook):
    """``sys.unraisablehook`` while the command runs: a ``KeyboardInterrupt`` that Python could not raise
    (it came during a finaliser of the main thread) is sent again, quietly, from a thread (sent from here,
    it would be raised in this hook and lost again); anything else is reported as Python would."""
    if (
        _running
        and isinstance(unraisable.exc_value, KeyboardInterrupt)
        and threading.current_thread() is threading.main_thread()
        and not sys.is_finalizing()
        and callable(signal.getsignal(signal.SIGINT))
    ):
        try:
            threading.Thread(target=_send_interrupt_again, name="stnkit-ctrl-c", daemon=True).start()
            return
        except RuntimeError:  # no new thread can start: report it as Python would
            pass
    _report(unraisable)


def main() -> int:
    global _running
    previous = signal.getsignal(signal.SIGINT)
    catching = previous is signal.default_int_handler  # not where the caller has SIGINT ignored (nohup, `cmd &`)
    if catching:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    from stnkit.cli import main as cli_main

    signal.signal(signal.SIGINT, previous)
    if not catching:
        return cli_main()
    hook = sys.unraisablehook
    sys.unraisablehook = _resend_lost_interrupt
    _running = True
    try:
        return cli_main()
    finally:
        _running = False
        sys.unraisablehook = hook


if __name__ == "__main__":
    sys.exit(main())
