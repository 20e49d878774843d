"""Shared CLI behaviour of the ``analysis`` commands: user errors are one line and exit 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from tti_ray.cli import UserError, die


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """The project's user errors (:class:`~tti_ray.cli.UserError`: a bad SOURCE, objective,
    flag, checkpoint or config) and missing files become ``prog: error: <one line>`` + exit 2;
    anything else is a bug and keeps its traceback. ``TTI_RAY_DEBUG=1`` re-raises user errors
    with the traceback too."""
    try:
        yield
    except (UserError, FileNotFoundError) as e:
        if os.environ.get("TTI_RAY_DEBUG"):
            raise
        die(prog, one_line(str(e) or type(e).__name__))


MAX_MESSAGE = 300


def one_line(msg: str) -> str:
    """The first line of ``msg``, cut to ``MAX_MESSAGE`` characters (a message that lists a
    whole table is no message)."""
    line = (msg.strip().splitlines() or [""])[0]
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"
