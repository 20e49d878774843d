"""SIGINT / SIGTERM on the sweep driver: an honest interrupt, not a success.

Tune's own SIGINT handler ends ``fit()`` gracefully (trials stopped, experiment state saved) and
then returns as if the sweep had ended, so a Ctrl-C looked like success (exit 0, a FINISHED
MLflow parent), and SIGTERM killed the driver without saving anything. Here both signals are
caught by :class:`Interrupts`: the first one is handed to Tune's graceful stop (its SIGUSR1
handler, which Tune always installs while ``fit()`` runs) and remembered; the sweep then writes
its tables as they are, marks the MLflow runs KILLED and raises :class:`SweepInterrupted`, which
the CLI turns into ``interrupted; continue with --resume`` and exit code 130 (SIGINT) or 143
(SIGTERM). Before ``fit()`` runs, or on a second signal, the signal raises ``KeyboardInterrupt``
at once (as :class:`SweepInterrupted`).
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped on a signal; ``exit_code`` is 128 + the signal number. A
    ``KeyboardInterrupt``, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class Interrupts:
    """``with Interrupts() as irq: ...; if irq.signum: ...`` (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        import threading

        if threading.current_thread() is threading.main_thread():
            # this handler forwards SIGINT to Tune itself; Tune must not replace it
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            for s in HANDLED:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back after ``ray.init``: Ray's core worker installs a C-level
        SIGTERM handler that aborts the process (exit 134, nothing saved)."""
        for s in self._old:
            signal.signal(s, self._handle)

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        tune_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if first and callable(tune_stop):  # fit() is running: stop it gracefully
            tune_stop(signum, frame)
            return
        raise SweepInterrupted(self.signum or signum)

    def raise_if_interrupted(self) -> None:
        if self.signum is not None:
            raise SweepInterrupted(self.signum)
