"""Shared CLI behaviour: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class UsageError(ValueError):
    """A bad flag or flag combination (one line)."""


def die(prog: str, msg: str) -> NoReturn:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse with ``prog: error: <one line>`` and exit 2 for a bad or unknown flag (not the
    multi-line usage dump); ``--help`` is unchanged."""

    def __init__(self, *args, short_prog: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.short_prog = short_prog

    def error(self, message: str) -> NoReturn:
        die(self.short_prog, message.removeprefix("argument ").replace("\n", " "))


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {v}")
    return v


def user_error_types() -> tuple[type[BaseException], ...]:
    from tti_ray.config import ConfigError
    from tti_ray.data import DataError
    from tti_ray.lock import LockedError
    from tti_ray.train.checkpoint import CheckpointError
    from tti_ray.train.loop import TrainSetupError

    return (ConfigError, DataError, CheckpointError, TrainSetupError, UsageError, LockedError)


@contextmanager
def fail_on_user_errors(prog: str, config_file: str | None = None) -> Iterator[None]:
    """Turn the project's user-facing errors into ``prog: error: <one line>`` + exit 2.

    Data errors name a config key (``data.tokenizer: …``); ``config_file`` puts the file in
    front of it."""
    from tti_ray.data import DataError

    try:
        yield
    except user_error_types() as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, DataError) and config_file:
            msg = f"{config_file}: {msg}"
        die(prog, msg)
