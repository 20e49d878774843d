"""A sweep's plan: where it writes, which study and storage it uses, how it tracks, and the
checks that run before the experiment directory is touched (``--dry-run`` prints
:meth:`SweepPlan.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tti_ray.sweep.preflight import (
    check_data,
    check_resources,
    check_storage,
    check_writable,
    is_uri,
)
from tti_ray.sweep.ray_start import local_nodes, local_where
from tti_ray.sweep.space import SearchSpace
from tti_ray.tracking import resolve_tracking

TUNE_NAME = "tune"


@dataclass
class SweepPlan:
    space: SearchSpace
    exp_dir: Path
    storage: str  # Tune storage_path (local dir or URI)
    study_url: str
    address: str | None
    resume: bool
    runs_dir: Path | None
    threads: int | None
    wait_sae: bool = True
    tracking: Any = None  # tti_ray.tracking.TrackingConfig, or None for --no-tracking
    check_resources: bool = True  # False: --skip-resource-check (autoscaling clusters)
    origin: dict[str, Any] | None = None  # how the space was made (file, --set, --preset)

    def describe(self) -> dict[str, Any]:
        s = self.space
        cfg = s.run_config({k: p.extremes()[0] for k, p in s.parameters.items()})
        return {
            "name": s.name,
            "experiment_dir": str(self.exp_dir),
            "tune_storage": f"{self.storage}/{TUNE_NAME}",
            "optuna_study": {"name": s.name, "storage": self.study_url},
            "ray_address": self.address or "local (started by this command)",
            "resume": self.resume,
            "searcher": s.searcher.model_dump(),
            "scheduler": s.scheduler.model_dump(),
            "objectives": [o.model_dump() for o in s.objectives],
            "constraints": [c.describe() for c in s.constraints],
            "parameters": {k: p.model_dump(exclude_none=True) for k, p in s.parameters.items()},
            "configurations": s.n_configs(),
            "seeds_per_config": s.budget.seeds_per_config,
            "trials": s.n_trials(),
            "concurrency": s.concurrency,
            "resources_per_trial": s.resources.model_dump(),
            "base_run_config": cfg.to_dict(),
            "tracking": self.tracking.to_dict() if self.tracking else None,
        }


def preflight(plan: SweepPlan, num_cpus: int | None = None) -> None:
    """Everything that can be checked before the experiment directory is touched."""
    check_writable(plan.exp_dir)
    check_storage(plan.storage)
    check_data(plan.space)
    if plan.check_resources and not plan.address:
        check_resources(plan.space, local_nodes(num_cpus), local_where(num_cpus),
                        (plan.origin or {}).get("sets", ()))


def plan_sweep(
    space: SearchSpace,
    out: Path | None,
    *,
    storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    artifact_store: str | None = None,
    track: bool = True,
) -> SweepPlan:
    exp_dir = (out or Path("experiments") / space.name).absolute()
    store = storage or str(exp_dir)
    if not is_uri(store):
        store = str(Path(store).absolute())
    study_url = space.study_storage or f"sqlite:///{exp_dir / 'optuna.db'}"
    threads = max(1, int(space.resources.cpus_per_worker))
    return SweepPlan(
        space, exp_dir, store, study_url, address, resume,
        runs_dir=None if is_uri(store) else exp_dir / "runs", threads=threads,
        tracking=resolve_tracking(exp_dir=exp_dir, experiment_name=space.name,
                                  tracking_uri=tracking_uri, artifact_store=artifact_store,
                                  enabled=track, resume=resume),
    )
