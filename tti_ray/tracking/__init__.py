"""MLflow as the system of record: a parent run per sweep, a child run per trial.

Stage order: ``… → train → sweep → tracking``. The training code only sees a reporter wrapper
(:class:`~tti_ray.tracking.runs.TrackingReporter`); the sweep driver keeps the parent run
(:class:`~tti_ray.tracking.sweep.SweepTracker`). No Ray imports here: the sweep glue passes
plain dicts. Naming contract (read by the analysis stage):

* parent: tag ``tti_ray.role=sweep``; params = the search space without ``base``; artifacts
  ``search_space.yaml``, ``trials.csv``, ``pareto.csv``, ``pareto.json``, ``hypervolume.json``,
  ``front.png``; metric ``sweep/hypervolume`` (step = trials ended).
* child: tags ``tti_ray.role=trial``, ``mlflow.parentRunId``, ``tti_ray.trial_id``,
  ``tti_ray.config_id``, ``tti_ray.status`` (finished | diverged | early_stopped | failed |
  running), ``tti_ray.searched`` (comma-separated dotted paths); params = the flattened resolved
  run config (dotted keys); metrics named as in :mod:`tti_ray.metrics`, logged with ``step``;
  artifacts ``config.yaml``, ``curves.png``, ``checkpoint.json`` (a pointer).
* standalone ``python -m tti_ray.train --tracking-uri``: one run, ``tti_ray.role=run``.
"""

from __future__ import annotations

from tti_ray.tracking.config import (
    TrackingConfig,
    TrackingError,
    add_tracking_args,
    preflight,
    resolve_tracking,
)
from tti_ray.tracking.runs import attach_worker, track_run, track_trial
from tti_ray.tracking.sweep import SweepTracker, start_sweep_tracking, update_sweep_tracking

__all__ = [
    "SweepTracker",
    "TrackingConfig",
    "TrackingError",
    "add_tracking_args",
    "attach_worker",
    "preflight",
    "resolve_tracking",
    "start_sweep_tracking",
    "track_run",
    "track_trial",
    "update_sweep_tracking",
]
