"""Where a sweep stands (for the report's first section) and which configuration is the
baseline of its comparisons (:func:`choose_baseline`, rule in :mod:`analysis.report`)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from analysis.sources import Source
from tti_ray.cli import UserError
from tti_ray.fronts.tables import CONFIG_ID, FINISHED, STATUS
from tti_ray.trials import STATUSES, TERMINAL, TrialStatus


def sweep_status(src: Source) -> dict[str, Any]:
    """Counts by status, the planned total, and one human line: "3 of 8 trials finished; 2
    running; 3 not started yet"."""
    df = src.trials
    counts = (
        {s: int((df[STATUS].astype(str) == s).sum()) for s in STATUSES}
        if len(df)
        else {s: 0 for s in STATUSES}
    )
    n = len(df)
    total = max(src.expected_trials or n, n)
    parts = [f"{counts[FINISHED]} of {total} trials finished"]
    T = TrialStatus
    shown = [s.value for s in (T.RUNNING, T.PENDING, T.DIVERGED, T.EARLY_STOPPED, T.FAILED)]
    parts += [f"{counts[s]} {s.replace('_', '-')}" for s in shown if counts[s]]
    if counts[TrialStatus.RUNNING] and src.updated_at is not None:
        # a killed sweep leaves its trials "running": the table's age tells the two apart
        age = _age(max(0.0, time.time() - src.updated_at))
        parts[1] += f" (trial table last written {age} ago)"  # parts[1] is the running count
    if total > n:  # an MLflow child run may only appear once its trial reports
        parts.append(
            f"{total - n} " + ("not started yet" if src.kind == "dir" else "not in MLflow yet")
        )
    return {
        "counts": counts,
        "n_recorded": n,
        "n_planned": src.expected_trials,
        "line": "; ".join(parts),
        "complete": total
        == counts[FINISHED] + sum(counts[s] for s in TERMINAL if s != FINISHED)
        and total == n,
    }


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def choose_baseline(df: pd.DataFrame, params: list[str], override: str | None = None) -> str | None:
    """The baseline configuration id (module docstring); None for an empty table."""
    if override is not None:
        if override not in set(df[CONFIG_ID].astype(str)):
            raise UserError(
                f"--baseline: config_id {override!r} not in the sweep "
                f"(config_ids: {sorted(set(df[CONFIG_ID].astype(str)))})"
            )
        return override
    fin = df[df[STATUS].astype(str) == FINISHED]
    pool = fin if len(fin) else df
    if not len(pool):
        return None

    def key(row: pd.Series) -> tuple:
        # numbers before anything else, compared as numbers; other values as strings
        out = []
        for p in params:
            v = pd.to_numeric(pd.Series([row[p]]), errors="coerce").iloc[0]
            out.append((0, float(v), "") if pd.notna(v) else (1, 0.0, str(row[p])))
        return tuple(out)

    firsts = pool.groupby(CONFIG_ID, sort=False).head(1)
    best = min((r for _, r in firsts.iterrows()), key=key)
    return str(best[CONFIG_ID])
