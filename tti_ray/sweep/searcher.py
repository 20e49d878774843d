"""Optuna-backed searchers for Ray Tune: multi-objective, persistent, status-aware.

* :func:`make_searcher` builds Ray's ``OptunaSearch`` with lists of metrics/modes, the chosen
  sampler (TPE with ``constant_liar`` + ``multivariate`` for parallel trials, NSGA-II, GP, random,
  grid) and an RDB study (SQLite in the experiment dir by default), so the study survives driver
  restarts and can be opened with Optuna's own tools (``optuna.load_study``).
* :class:`StatusAwareOptunaSearch` tells Optuna only what a trial really achieved: a trial that
  finished with every objective finite is ``COMPLETE``; a trial stopped early by the scheduler
  (its last result has ``status: running``) is ``PRUNED`` - its rung values are *not* told as a
  complete result; a diverged or failed trial is ``FAIL``. (Ray's own ``OptunaSearch`` would tell
  an early-stopped trial's last values as complete.)
* :class:`SeedGroups` runs each suggested configuration with ``seeds_per_config`` seeds and tells
  the searcher the seed mean once every seed has ended (``FAIL`` if any seed did not finish).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tti_ray.cli import UsageError
from tti_ray.sweep.constraints import constraint_values
from tti_ray.sweep.samplers import make_sampler
from tti_ray.sweep.space import SearchSpace, config_id
from tti_ray.trials import TrialStatus

SEED_KEY = "__seed_index__"
SEEDS_KEY = "__seed_results__"  # a seed group's per-seed metrics, for its constraints
OPTUNA_KEY = "__optuna_trial__"  # the Optuna trial number, added to each suggested config
ATTR = "tti_ray."  # prefix of the user attributes that link Optuna trials to the sweep
# What StatusAwareOptunaSearch reads of Ray's OptunaSearch (private in Ray 2.5x-2.6x, which has no
# public way to tell Optuna a PRUNED or FAIL trial): Tune trial id -> optuna.Trial, the study,
# the Tune trials already told, the search space. Checked when the searcher is built.
OPTUNA_STATE = ("_ot_trials", "_ot_study", "_completed_trials", "_space")


class StatusAwareOptunaSearch(OptunaSearch):
    """``constraints`` (the space's): before a trial is told, its constraint values are set on
    the Optuna trial (``Trial.set_constraint``, one per constraint, named by
    :meth:`Constraint.describe`), where Optuna's TPE, NSGA-II and GP samplers read them. With a
    relative constraint, a trial that ends before the baseline is held and told once the
    baseline has ended."""

    def __init__(self, *args: Any, constraints: list[Any] | None = None,
                 baseline: dict[str, Any] | None = None, runs_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = [a for a in OPTUNA_STATE if not hasattr(self, a)]
        if missing:
            raise RuntimeError(
                f"ray.tune's OptunaSearch no longer has {missing}: StatusAwareOptunaSearch must "
                "be adapted to this Ray version"
            )
        self._runs_dir = runs_dir
        self._constraints = list(constraints or [])
        self._baseline_point = baseline if any(c.relative for c in self._constraints) else None
        self._baseline_values: dict[str, Any] | None = None  # None: baseline not ended yet
        self._held: list[tuple[str, dict[str, Any] | None, bool]] = []

    # -- links between Optuna trials and the sweep's trials --------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if not isinstance(config, dict) or trial_id not in self._ot_trials:
            return config
        ot = self._ot_trials[trial_id]
        ot.set_user_attr(f"{ATTR}config_id", config_id(
            {k: config[k] for k in self._space if k in config}))
        self.add_member(trial_id, trial_id)
        return {**config, OPTUNA_KEY: ot.number}

    def add_member(self, primary: str, trial_id: str) -> None:
        """Record that sweep trial ``trial_id`` runs Optuna trial ``primary`` (a seed of it)."""
        ot = self._ot_trials.get(primary)
        if ot is None:
            return
        ids = [*ot.user_attrs.get(f"{ATTR}trial_ids", []), trial_id]
        ot.set_user_attr(f"{ATTR}trial_ids", ids)
        if self._runs_dir:
            ot.set_user_attr(f"{ATTR}run_dirs", [f"{self._runs_dir}/{t}" for t in ids])

    def _is_baseline(self, trial_id: str) -> bool:
        point = self._baseline_point
        params = self._ot_trials[trial_id].params
        return point is not None and all(
            k in params and (params[k] == v or (isinstance(v, float) and isinstance(
                params[k], float) and math.isclose(params[k], v, rel_tol=1e-12)))
            for k, v in point.items())

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._baseline_point is not None and self._baseline_values is None:
            if not self._is_baseline(trial_id):
                self._held.append((trial_id, result, error))
                return
            ok = not error and (result or {}).get("status") == TrialStatus.FINISHED
            self._baseline_values = dict(result or {}) if ok else {}
            self._tell(trial_id, result, error)
            held, self._held = self._held, []
            for args in held:
                self._tell(*args)
            return
        self._tell(trial_id, result, error)

    def _tell(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.samplers import GridSampler
        from optuna.trial import TrialState

        ot_trial = self._ot_trials[trial_id]
        status = (result or {}).get("status")
        values = [(result or {}).get(m) for m in self.metric]
        ok = (
            not error
            and status == TrialStatus.FINISHED
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        )
        seeds = (result or {}).get(SEEDS_KEY) or [result or {}]
        label = TrialStatus.EARLY_STOPPED.value if status == TrialStatus.RUNNING else status
        try:
            ot_trial.set_user_attr(f"{ATTR}status",
                                  TrialStatus.FAILED.value if error or not label else label)
            mlflow_ids = [r.get("mlflow_run_id") for r in seeds if r.get("mlflow_run_id")]
            if mlflow_ids:
                ot_trial.set_user_attr(f"{ATTR}mlflow_run_ids", mlflow_ids)
            if self._constraints:
                # a seed group is feasible only if every seed is: the worst seed's values
                per_seed = [constraint_values(self._constraints, r, self._baseline_values or {})
                            for r in seeds]
                cons = [max(vs) for vs in zip(*per_seed, strict=True)]  # type: ignore[arg-type]
                for c, v in zip(self._constraints, cons, strict=True):
                    ot_trial.set_constraint(c.describe(), v)
            if ok:
                self._ot_study.tell(ot_trial, [float(v) for v in values])
            elif status == TrialStatus.RUNNING and not error:
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            else:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            pass  # already told (a trial re-run after a driver restart): its first update refuses
        except RuntimeError:
            # Optuna's GridSampler calls Study.stop() once the grid is covered, which refuses
            # outside study.optimize; the trial is stored by then (Optuna writes it in a finally)
            if not isinstance(self._ot_study.sampler, GridSampler):
                raise
        self._completed_trials.add(trial_id)


def check_new_study(storage_url: str, name: str) -> None:
    """A fresh sweep must never join another sweep's study (Ray's ``OptunaSearch`` opens its study
    with ``load_if_exists=True``: TPE would learn from the other sweep's trials). Raises
    :class:`~tti_ray.cli.UsageError` if ``storage_url`` already holds a study called ``name``.
    A SQLite file that does not exist yet holds nothing (and is not created here)."""
    import optuna

    if storage_url.startswith("sqlite:///"):
        path = storage_url.removeprefix("sqlite:///")
        if not os.path.exists(path if path.startswith("/") else os.path.abspath(path)):
            return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.get_all_study_names(storage=storage_url)
    except Exception as e:  # noqa: BLE001 - any storage failure is the user's URL
        raise UsageError(f"study_storage {storage_url}: cannot be opened ({_short(e)})") from None
    if name in names:
        raise UsageError(
            f"study_storage {storage_url}: already holds a study named {name!r}; pass --resume "
            "to continue that sweep, or choose another name or study_storage"
        )


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def annotate_study(searcher: Searcher, space: SearchSpace, exp_dir: str) -> None:
    """Study-level links: the objectives' names (``Study.set_metric_names``, so Optuna's
    dashboard and plots name them), the experiment directory, the search space's hash and the
    constraints."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    inner = getattr(searcher, "searcher", searcher)
    study = inner._ot_study
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use since
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(space.metrics)
    study.set_user_attr(f"{ATTR}experiment_dir", exp_dir)
    study.set_user_attr(f"{ATTR}search_space_sha256", space_hash(space))
    study.set_user_attr(f"{ATTR}constraints", [c.describe() for c in space.constraints])


def space_hash(space: SearchSpace) -> str:
    blob = json.dumps(space.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def set_study_reference(storage_url: str, name: str, hv: dict[str, Any]) -> None:
    """Record the hypervolume's reference point and value on the study (after each output
    write at the end of a sweep)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage_url)
    study.set_user_attr(f"{ATTR}reference_point", hv.get("reference_point"))
    study.set_user_attr(f"{ATTR}hypervolume", hv.get("hypervolume"))


def make_searcher(space: SearchSpace, storage_url: str, *, exp_dir: str | None = None,
                  runs_dir: str | None = None) -> Searcher:
    import optuna
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher: Searcher = StatusAwareOptunaSearch(
        space={k: p.optuna_distribution() for k, p in space.parameters.items()},
        metric=space.metrics,
        mode=space.modes,
        sampler=make_sampler(space),
        study_name=space.name,
        storage=RDBStorage(storage_url),
        points_to_evaluate=space.first_points,
        constraints=space.constraints,
        baseline=space.baseline,
        runs_dir=runs_dir,
    )
    annotate_study(searcher, space, exp_dir or "")
    if space.budget.seeds_per_config > 1:
        extra = [c.metric for c in space.constraints if c.metric not in space.metrics]
        searcher = SeedGroups(searcher, space.budget.seeds_per_config, [*space.metrics, *extra])
    return searcher


class SeedGroups(Searcher):
    """Repeat each suggestion for ``n_seeds`` trials (``config[SEED_KEY]`` = 0..n-1) and report
    the per-metric seed mean to the wrapped searcher."""

    def __init__(self, searcher: Searcher, n_seeds: int, metrics: list[str]) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.n_seeds, self.metrics = searcher, n_seeds, metrics
        self.groups: dict[str, dict[str, Any]] = {}  # primary id -> group
        self.member_of: dict[str, str] = {}
        self.open: list[str] = []  # primaries still handing out seeds

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if self.open:
            primary = self.open[0]
            group = self.groups[primary]
        else:
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            primary = trial_id
            group = self.groups[primary] = {"config": config, "members": [], "results": {}}
            self.open.append(primary)
        index = len(group["members"])
        group["members"].append(trial_id)
        self.member_of[trial_id] = primary
        if index and hasattr(self.searcher, "add_member"):
            self.searcher.add_member(primary, trial_id)
        if len(group["members"]) == self.n_seeds:
            self.open.remove(primary)
        return {**group["config"], SEED_KEY: index}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # intermediate results are not told (Optuna ignores them anyway)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        primary = self.member_of.get(trial_id)
        if primary is None:
            return
        group = self.groups[primary]
        group["results"][trial_id] = (result or {}, error)
        if len(group["results"]) < self.n_seeds:
            return
        outcomes = list(group["results"].values())
        if all(r.get("status") == TrialStatus.FINISHED and not e for r, e in outcomes):
            agg: dict[str, Any] = {"status": TrialStatus.FINISHED.value}
            for m in self.metrics:
                vals = [float(r[m]) for r, _ in outcomes if m in r]
                agg[m] = sum(vals) / len(vals) if len(vals) == self.n_seeds else None
            agg[SEEDS_KEY] = [{m: r.get(m) for m in [*self.metrics, "mlflow_run_id"]}
                              for r, _ in outcomes]
            self.searcher.on_trial_complete(primary, agg, error=False)
        else:
            pruned = all(r.get("status") in (TrialStatus.RUNNING, TrialStatus.FINISHED) and not e
                         for r, e in outcomes)
            self.searcher.on_trial_complete(
                primary, {"status": (TrialStatus.RUNNING if pruned else TrialStatus.FAILED).value},
                error=not pruned
            )

    # Tune checkpoints a wrapping searcher (one with ``.searcher``) through get_state/set_state and
    # the wrapped one through its own save/restore (Ray's ConcurrencyLimiter does the same)
    _STATE = ("groups", "member_of", "open", "n_seeds", "metrics")

    def get_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._STATE}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - Tune's own searcher checkpoint
