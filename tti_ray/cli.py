"""Shared CLI behaviour: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class UsageError(ValueError):
    """A bad flag or flag combination (one line)."""


def die(prog: str, msg: str) -> NoReturn:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def user_error_types() -> tuple[type[BaseException], ...]:
    from tti_ray.config import ConfigError
    from tti_ray.data import DataError
    from tti_ray.train.checkpoint import CheckpointError
    from tti_ray.train.loop import TrainSetupError

    return (ConfigError, DataError, CheckpointError, TrainSetupError, UsageError)


@contextmanager
def fail_on_user_errors(prog: str) -> Iterator[None]:
    """Turn the project's user-facing errors into ``prog: error: <one line>`` + exit 2."""
    try:
        yield
    except user_error_types() as e:
        die(prog, str(e).splitlines()[0] if str(e) else type(e).__name__)
