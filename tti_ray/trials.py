"""The vocabulary of a trial table, defined once for ``trials.csv``, the MLflow tags
(``tti_ray.status``, ``tti_ray.config_id``), the sweep driver and the reports: the trial
statuses and the id of a configuration.

A :class:`TrialStatus` is a ``str``, so it compares equal to the words in existing files and tags
(``"finished" == TrialStatus.FINISHED``); writers store ``.value`` so files keep plain words.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any


class TrialStatus(StrEnum):
    FINISHED = "finished"  # trained to the end with finite metrics
    DIVERGED = "diverged"  # stopped by a non-finite loss
    EARLY_STOPPED = "early_stopped"  # stopped by the scheduler
    FAILED = "failed"  # raised, or ended without a final report
    RUNNING = "running"
    PENDING = "pending"


#: every status, in the order the docs list them
STATUSES: tuple[str, ...] = tuple(s.value for s in TrialStatus)
#: the statuses of a trial that has ended
TERMINAL: tuple[str, ...] = (
    TrialStatus.FINISHED.value,
    TrialStatus.DIVERGED.value,
    TrialStatus.EARLY_STOPPED.value,
    TrialStatus.FAILED.value,
)


def config_id(params: dict[str, Any]) -> str:
    """Stable id of a configuration (its searched values), shared by its seeds."""
    blob = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]
