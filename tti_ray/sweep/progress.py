"""What the driver does each time the trial table changes: rewrite the output files, print one
line for the trial that ended, and mirror the table into MLflow (through ``tti_ray.tracking``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tti_ray.sweep.outputs import write_outputs
from tti_ray.sweep.space import SearchSpace
from tti_ray.tracking import update_sweep_tracking
from tti_ray.trials import TERMINAL, TrialStatus


class Progress:
    """One line per ended trial: the live view of a sweep that runs for hours."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, df: pd.DataFrame) -> None:
        done = df[df["status"].isin(TERMINAL)]
        last = done.sort_values("completed_at").iloc[-1] if len(done) else None
        if last is None:
            return
        vals = "  ".join(
            f"{m}={last.get(m):.4g}" if isinstance(last.get(m), float) else f"{m}=–"
            for m in self.space.metrics
        )
        if self.space.constraints and last["status"] == TrialStatus.FINISHED:
            feas = last.get("feasible")
            vals += "  " + {True: "feasible", False: "INFEASIBLE"}.get(feas, "feasible: pending")
        counts = df["status"].value_counts().to_dict()
        summary = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        print(
            f"[tti_ray.sweep] {len(done)}/{self.space.n_trials()} ended | {last['trial_id']} "
            f"{last['status']} {vals} | {summary}",
            flush=True,
        )


def on_table_update(space: SearchSpace, exp_dir: Path) -> Callable[[pd.DataFrame], None]:
    """The trial table's ``on_update``: output files, the progress line, the MLflow mirror."""
    progress = Progress(space)

    def update(df: pd.DataFrame) -> None:
        write_outputs(space, exp_dir, df)
        progress(df)
        update_sweep_tracking(exp_dir, df)

    return update
