"""Shared CLI behaviour: user errors become one line on stderr and exit code 2.

:class:`UserError` is the one base of the project's user-facing errors (a bad file, flag, key or
value: :class:`~tti_ray.config.ConfigError`, ``DataError``, ``CheckpointError``, ``LockedError``,
``SourceError``, :class:`UsageError` ...). It lives here, on the lowest floor, so that every
stage can raise one and every CLI can catch them all without importing the stages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class UserError(ValueError):
    """A problem with what the user gave (file, flag, key, value), said in one line.

    A ``ValueError`` so that library callers that catch ``ValueError`` keep working."""


class UsageError(UserError):
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


@contextmanager
def fail_on_user_errors(
    prog: str,
    config_file: str | None = None,
    *,
    also: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Turn the project's user-facing errors (:class:`UserError`, plus the classes in ``also``)
    into ``prog: error: <one line>`` + exit 2.

    An error whose message names a config key but not the file (``data.tokenizer: …``, a
    :class:`UserError` with ``names_config_key``) gets ``config_file`` in front of it."""
    try:
        yield
    except (UserError, *also) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if getattr(e, "names_config_key", False) and config_file:
            msg = f"{config_file}: {msg}"
        die(prog, msg)
