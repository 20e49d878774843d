"""Search-space checks that complete the plan at load time (issue 22), beside the schema in
:mod:`tti_ray.sweep.space`: what used to fail only once the sweep ran (Optuna's distributions
and sampler, MO-ASHA rungs beyond the training length, the study storage URL), and errors of
``--set`` values that blame the flag rather than the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tti_ray.config import ConfigError, RunConfig
from tti_ray.sweep.samplers import make_sampler


def blame_set(msg: str, source: str, sets: list[str]) -> str:
    """``<file>: <key>: what`` → ``--set <key>=<value>: <key>: what`` when the offending key
    (or a mapping above or below it) was set on the command line, not in the file."""
    if not msg.startswith(f"{source}: "):
        return msg
    rest = msg[len(source) + 2:]
    parts = rest.split(": ")
    locs = [parts[0].replace("<top>", "").strip()]
    if len(parts) > 2 and " " not in parts[1]:
        locs.append(f"{locs[0]}.{parts[1]}".strip("."))
    if locs[0] == "" and len(parts) > 2:  # a model-level check: "<top>: key: what"
        locs = [parts[1]]
    for item in reversed(sets):
        key = item.split("=", 1)[0].strip()
        for loc in locs:
            loc = re.sub(r"\[\d+\]", "", loc)
            if loc and (loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")):
                return f"--set {item}: {rest}"
    return msg


def check_plan(space: Any, base: RunConfig, path: Path) -> None:
    """What would otherwise fail only once the sweep runs: Optuna's distributions and sampler,
    the scheduler's rungs against the training length, the study storage URL. ``space`` is the
    :class:`~tti_ray.sweep.space.SearchSpace` being loaded (space.py calls this)."""
    for key, param in space.parameters.items():
        try:
            param.optuna_distribution()
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: parameters.{key}: {_first_line(e)}") from None
    try:
        make_sampler(space)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: searcher: {_first_line(e)}") from None
    if space.scheduler.type == "mo_asha" and space.scheduler.grace_steps > base.train.steps:
        raise ConfigError(
            f"{path}: scheduler.grace_steps: {space.scheduler.grace_steps} is beyond the "
            f"training length (base train.steps = {base.train.steps}): no rung would ever run"
        )
    if space.study_storage is not None:
        _check_study_storage(space.study_storage, path)


def _check_study_storage(url: str, path: Path) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise ConfigError(f"{path}: study_storage: not a SQLAlchemy URL ({_first_line(e)})") \
            from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db = Path(parsed.database)
        if db.exists() and not db.is_file():
            raise ConfigError(f"{path}: study_storage: {db} is not a file")
        if not db.parent.is_dir():
            raise ConfigError(f"{path}: study_storage: directory {db.parent} does not exist")


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]
