"""The trial table: one row per trial, kept current in the experiment directory.

A Tune ``Callback`` in the driver records every trial event into ``trials_state.json`` (atomic
rewrite) and regenerates ``trials.csv``, ``pareto.csv``/``pareto.json``, ``hypervolume.json`` and
``front.png`` whenever a trial ends, so an interrupted sweep still leaves every finished trial on
disk, and a resumed one picks the table up again.

``trials.csv`` columns: ``trial_id``, ``config_id``, ``status`` (``finished``, ``diverged``,
``early_stopped``, ``failed``, ``running``, ``pending``), ``seed``, ``feasible`` (every
constraint of the search space met; True without constraints; empty while undecidable, see
:mod:`tti_ray.sweep.constraints`), one column per searched
parameter (its dotted config path), one per metric (named exactly as the metric),
``steps``, ``completed_at`` (order of completion), ``node_id``, ``checkpoint``, ``optuna_trial``
(the number of the Optuna trial it ran, shared by the seeds of a configuration).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from tti_ray.io import atomic_write_text
from tti_ray.sweep.constraints import feasible_column
from tti_ray.sweep.searcher import OPTUNA_KEY, SEED_KEY
from tti_ray.sweep.space import SearchSpace, config_id
from tti_ray.trials import STATUSES, TrialStatus  # noqa: F401 - STATUSES re-exported

FIXED = ["trial_id", "config_id", "status", "seed"]
TAIL = ["steps", "completed_at", "node_id", "checkpoint", "optuna_trial"]


def _metric_keys(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in result.items():
        if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class TrialTable(Callback):
    def __init__(self, space: SearchSpace, exp_dir: Path, base_seed: int,
                 stopped: Any = None, on_update: Any = None) -> None:
        self.space, self.exp_dir, self.base_seed = space, Path(exp_dir), base_seed
        self.stopped = stopped  # the MO-ASHA scheduler's set of stopped trial ids, if any
        self.on_update = on_update
        self.state_path = self.exp_dir / "trials_state.json"
        self.rows: dict[str, dict[str, Any]] = {}
        self.load()

    def load(self) -> None:
        if self.state_path.exists():
            self.rows = json.loads(self.state_path.read_text())

    # -- Tune callback hooks ---------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        self.load()  # a restored (unpickled) callback re-reads the table from disk

    def _row(self, trial: Any) -> dict[str, Any]:
        row = self.rows.get(trial.trial_id)
        if row is None:
            params = {k: trial.config.get(k) for k in self.space.parameters}
            row = {
                "trial_id": trial.trial_id,
                "config_id": config_id(params),
                "status": TrialStatus.PENDING.value,
                "seed": self.base_seed + int(trial.config.get(SEED_KEY, 0)),
                **params,
                "metrics": {},
                "steps": 0,
                "completed_at": None,
                "node_id": None,
                "checkpoint": "",
                "optuna_trial": trial.config.get(OPTUNA_KEY),
            }
            self.rows[trial.trial_id] = row
        return row

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        known = {t.trial_id for t in trials}
        # a trial the previous driver created but Tune never saved (driver killed in between)
        # will not come back under that id: it must not linger as pending/running
        stale = [k for k, r in self.rows.items()
                 if r["status"] in (TrialStatus.PENDING, TrialStatus.RUNNING) and k not in known]
        for k in stale:
            del self.rows[k]
        changed = bool(stale)
        for t in trials:
            if t.trial_id not in self.rows:
                self._row(t)
                changed = True
        if changed:
            self.save()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        if row["status"] in (TrialStatus.PENDING, TrialStatus.FAILED, TrialStatus.RUNNING):
            row["status"] = TrialStatus.RUNNING.value
        self.save()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        row = self._row(trial)
        row["metrics"].update(_metric_keys(result))
        row["steps"] = int(result.get("step", row["steps"]) or 0)
        row["node_id"] = result.get("node_id") or row["node_id"]
        if result.get("status") == TrialStatus.DIVERGED:
            row["status"] = TrialStatus.DIVERGED.value
        ckpt = getattr(trial, "checkpoint", None)
        if ckpt is not None:
            row["checkpoint"] = checkpoint_uri(ckpt)
        self.save()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        last = trial.last_result or {}
        status = last.get("status")
        if self.stopped is not None and trial.trial_id in self.stopped:
            row["status"] = TrialStatus.EARLY_STOPPED.value
        elif status in (TrialStatus.FINISHED, TrialStatus.DIVERGED):
            row["status"] = status
        else:
            row["status"] = (TrialStatus.EARLY_STOPPED if status == TrialStatus.RUNNING
                             else TrialStatus.FAILED).value
        ckpt = getattr(trial, "checkpoint", None)
        if ckpt is not None:
            row["checkpoint"] = checkpoint_uri(ckpt)
        row["completed_at"] = 1 + sum(
            1 for r in self.rows.values() if r["completed_at"] is not None
        )
        self.save(outputs=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row["status"] = TrialStatus.FAILED.value
        row["completed_at"] = 1 + sum(
            1 for r in self.rows.values() if r["completed_at"] is not None
        )
        self.save(outputs=True)

    # -- persistence -----------------------------------------------------------------------------
    def set_metrics(self, trial_id: str, metrics: dict[str, float]) -> None:
        """Merge extra metrics (e.g. ``sae/*`` from an SAE evaluation) into a trial's row."""
        self.rows[trial_id]["metrics"].update(metrics)
        self.save(outputs=True)

    def save(self, outputs: bool = False) -> None:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_path, json.dumps(self.rows, indent=1, default=str))
        df = self.frame()
        write_trials_csv(df, self.exp_dir / "trials.csv")
        if outputs and self.on_update is not None:
            self.on_update(df)

    def frame(self) -> pd.DataFrame:
        df = rows_to_frame(self.rows.values(), list(self.space.parameters))
        base = config_id(self.space.baseline) if self.space.baseline is not None else None
        df.insert(df.columns.get_loc("seed") + 1, "feasible",
                  pd.Series(feasible_column(df, self.space.constraints, base), index=df.index,
                            dtype=object))
        return df


def checkpoint_uri(ckpt: Any) -> str:
    """A Ray checkpoint's location as a URI (``s3://bucket/…`` for S3 storage; Ray's ``path`` drops
    the scheme), so ``Checkpoint(uri)`` and readers of ``trials.csv`` can find it again."""
    fs = getattr(ckpt, "filesystem", None)
    scheme = getattr(fs, "type_name", "local")
    return ckpt.path if scheme == "local" else f"{scheme}://{ckpt.path}"


def rows_to_frame(rows: Any, params: list[str]) -> pd.DataFrame:
    records = []
    for r in rows:
        rec = {k: r.get(k) for k in FIXED + params}
        rec.update(r.get("metrics", {}))
        rec.update({k: r.get(k) for k in TAIL})
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if df.empty:
        return pd.DataFrame(columns=FIXED + params + TAIL)
    metric_cols = sorted(c for c in df.columns if c not in FIXED + params + TAIL)
    return df[FIXED + params + metric_cols + TAIL]


def write_trials_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
