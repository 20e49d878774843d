"""Shared CLI behaviour of the ``analysis`` commands: user errors are one line and exit 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from tti_ray.cli import die


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """``ValueError`` s (bad SOURCE, objectives, checkpoint, config: the project's user errors all
    derive from it) and missing files become ``prog: error: <one line>`` + exit 2.
    ``TTI_RAY_DEBUG=1`` re-raises them with the traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("TTI_RAY_DEBUG"):
            raise
        die(prog, str(e).splitlines()[0] if str(e) else type(e).__name__)
