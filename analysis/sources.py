"""Where a sweep's trials come from: an experiment directory or an MLflow experiment.

``load_source(spec)`` turns either into one :class:`Source`: the trials table in the
``trials.csv`` format of :mod:`tti_ray.fronts.tables` (``trial_id``, ``config_id``, ``status``,
``seed``, one column per searched parameter by dotted path, one per metric, ``completed_at``,
``checkpoint``), plus what the analysis needs to know about the sweep (objectives, searched
parameters, how many trials were planned, local checkpoints).

**Experiment directory** (layout at the top of :mod:`tti_ray.sweep.runner`): ``trials.csv``;
``search_space.yaml`` gives the objectives, the searched parameters and the planned trial count;
``runs/<trial_id>/checkpoint`` the checkpoints.

**MLflow** ``mlflow:<experiment name>@<tracking uri>`` (the name ends at the first ``@``; without
``@<uri>`` the ``MLFLOW_TRACKING_URI`` default is used). The contract with the tracking code:

* the sweep's parent run has tag ``tti_ray.role=sweep``; each trial is a child run with tag
  ``tti_ray.role=trial`` and ``mlflow.parentRunId`` = the parent's run id;
* a child's params are config values by dotted path (``interventions.anti_poly.coef``), its
  metrics are named as logged (``val/perplexity``; the latest value is used), and its tags
  ``tti_ray.status`` / ``tti_ray.trial_id`` / ``tti_ray.config_id`` (and ``tti_ray.feasible``,
  for a constrained sweep) fill those columns
  (fallbacks: the MLflow run status, the run id's first 8 characters, a hash of the searched
  values);
* searched parameters: from a ``search_space.yaml`` artifact of the parent run when there is
  one, else the children's ``tti_ray.searched`` tags (comma-separated dotted paths), else the
  params whose value differs between trials;
* checkpoints: a child's ``tti_ray.checkpoint`` tag when it is a local directory, else the
  local ``path`` in its ``checkpoint.json`` artifact (a pointer), read on demand;
* when an experiment holds several sweep parents, the most recent one is read (``parent_run``
  picks another).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tti_ray.cli import UserError
from tti_ray.config.load import parse_yaml, read_yaml
from tti_ray.fronts.dominance import Objective, parse_objectives
from tti_ray.fronts.tables import searched_parameters
from tti_ray.trials import STATUSES, TrialStatus, config_id

MLFLOW_PREFIX = "mlflow:"
DEFAULT_OBJECTIVES = "val/perplexity:min,val/polysemanticity/mean:min"
ROLE, STATUS_TAG, TRIAL_TAG, CONFIG_TAG = (
    "tti_ray.role",
    "tti_ray.status",
    "tti_ray.trial_id",
    "tti_ray.config_id",
)
PARENT_TAG = "mlflow.parentRunId"
SEARCHED_TAG, CHECKPOINT_TAG = "tti_ray.searched", "tti_ray.checkpoint"
FEASIBLE_TAG = "tti_ray.feasible"
# MLflow run status -> trials.csv status, when the tti_ray.status tag is missing
_MLFLOW_STATUS = {"RUNNING": TrialStatus.RUNNING, "SCHEDULED": TrialStatus.PENDING,
                  "FINISHED": TrialStatus.FINISHED, "FAILED": TrialStatus.FAILED,
                  "KILLED": TrialStatus.FAILED}  # fmt: skip
SEED_PARAMS = ("seed", "train.seed")
ID_COLUMNS = ("trial_id", "config_id", "node_id", "checkpoint")


class SourceError(UserError):
    """A SOURCE that cannot be read (one line, names what is wrong)."""


@dataclass
class Source:
    """A sweep's trials and what is known about the sweep."""

    kind: str  # "dir" | "mlflow"
    name: str
    location: str  # experiment directory, or "<name>@<tracking uri>"
    trials: pd.DataFrame
    params: list[str]  # searched parameters (dotted paths), in search-space order
    objectives: list[Objective]
    expected_trials: int | None = None  # planned by the search space, when known
    log_params: set[str] = field(default_factory=set)  # parameters searched on a log scale
    run_dirs: dict[str, Path] = field(default_factory=dict)  # trial_id -> local run directory
    notes: list[str] = field(default_factory=list)  # how things were inferred
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    resolve_checkpoint: Callable[[str], Path | None] | None = None  # MLflow: on-demand pointer
    updated_at: float | None = None  # when the trial table was last written (epoch seconds)

    @property
    def objective_spec(self) -> str:
        return ",".join(str(o) for o in self.objectives)

    def checkpoint(self, trial_id: str) -> Path | None:
        """The trial's final local checkpoint directory, or None."""
        cands: list[Path] = []
        if trial_id in self.run_dirs:
            cands.append(self.run_dirs[trial_id] / "checkpoint")
        rows = self.trials[self.trials["trial_id"].astype(str) == str(trial_id)]
        if (
            len(rows)
            and "checkpoint" in rows.columns
            and isinstance(rows.iloc[0]["checkpoint"], str)
        ):
            cands.append(Path(rows.iloc[0]["checkpoint"]))
        if self.resolve_checkpoint is not None:
            found = self.resolve_checkpoint(str(trial_id))
            if found is not None:
                cands.append(found)
        for c in cands:
            if (c / "model.safetensors").exists() and (c / "run_config.yaml").exists():
                return c
        return None


def load_source(
    spec: str | Path, *, objectives: str | None = None, parent_run: str | None = None
) -> Source:
    """Read SOURCE (module docstring); ``objectives`` ("m:min,m2:max") overrides the sweep's."""
    s = str(spec)
    src = _from_mlflow(s, parent_run) if s.startswith(MLFLOW_PREFIX) else _from_dir(Path(s))
    if objectives:
        try:
            src.objectives = parse_objectives(objectives)
        except ValueError as e:
            raise SourceError(f"--objectives: {e}") from None
    return src


# -- search-space file --------------------------------------------------------------------------
def _space_info(raw: dict[str, Any]) -> tuple[list[str], list[Objective], int | None, set[str]]:
    """(parameters, objectives, planned trials, log-scale parameters) from a search-space dict."""
    params_raw = raw.get("parameters") or {}
    params = list(params_raw)
    objs = parse_objectives(
        [f"{o['metric']}:{o.get('mode', 'min')}" for o in raw.get("objectives") or []]
        or DEFAULT_OBJECTIVES
    )
    log = {
        k
        for k, p in params_raw.items()
        if (p or {}).get("distribution") in ("loguniform", "logint")
    }
    expected = None
    try:
        from tti_ray.sweep.space import SearchSpace

        expected = SearchSpace.model_validate(raw).n_trials()
    except Exception:  # noqa: BLE001 - a space from another version still gives the rest
        budget = raw.get("budget") or {}
        if isinstance(budget.get("trials"), int):
            expected = budget["trials"] * int(budget.get("seeds_per_config", 1))
    return params, objs, expected, log


# -- experiment directory -----------------------------------------------------------------------
def _from_dir(d: Path) -> Source:
    if not d.is_dir():
        raise SourceError(
            f"SOURCE {d}: not a directory (expected an experiment directory or "
            f"mlflow:<experiment>@<tracking uri>)"
        )
    csv = d / "trials.csv"
    notes: list[str] = []
    if csv.exists():
        # the sweep writes trials.csv atomically, header included: an empty or id-less file is
        # damage, not an experiment that has not started
        if csv.stat().st_size == 0:
            raise SourceError(f"SOURCE {d}: {csv} is empty (0 bytes), not a trial table")
        try:
            # ids are hex strings: "1234e567" must not become a float (or "00ab12" lose zeros)
            df = pd.read_csv(csv, dtype={c: str for c in ID_COLUMNS})
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise SourceError(f"SOURCE {d}: {csv} is unreadable ({str(e).splitlines()[0]})") \
                from None
        missing = [c for c in ("trial_id", "status") if c not in df.columns]
        if missing:
            raise SourceError(f"SOURCE {d}: {csv} has no {missing[0]} column (not a tti_ray "
                              "trial table)")
    elif (d / "search_space.yaml").exists():
        df = pd.DataFrame(columns=["trial_id", "config_id", "status", "seed"])
        notes.append("no trials.csv yet: the sweep has not recorded any trial")
    else:
        raise SourceError(f"SOURCE {d}: no trials.csv (not an experiment directory)")
    space_file = d / "search_space.yaml"
    if space_file.exists():
        raw = read_yaml(space_file)
        params, objs, expected, log = _space_info(raw)
        name = raw.get("name") or d.name
    else:
        params, objs, expected, log = (
            searched_parameters(df),
            parse_objectives(DEFAULT_OBJECTIVES),
            None,
            set(),
        )
        name = d.name
        notes.append(
            "no search_space.yaml: parameters taken from the dotted columns of "
            "trials.csv, default objectives, planned trial count unknown"
        )
    params = [p for p in params if p in df.columns]
    runs = d / "runs"
    run_dirs = {p.name: p for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else {}
    updated = csv.stat().st_mtime if csv.exists() else None
    return Source(
        "dir", name, str(d), df, params, objs, expected, log, run_dirs, notes, updated_at=updated
    )


# -- MLflow -------------------------------------------------------------------------------------
def parse_mlflow_spec(spec: str) -> tuple[str, str | None]:
    """``mlflow:<name>@<uri>`` -> (name, uri); uri None when not given."""
    body = spec[len(MLFLOW_PREFIX) :]
    name, sep, uri = body.partition("@")
    if not name:
        raise SourceError(f"SOURCE {spec!r}: expected mlflow:<experiment name>@<tracking uri>")
    return name, (uri or None) if sep else None


def _value(s: str) -> Any:
    """An MLflow param string back to a number or bool where it is one."""
    for cast in (int, float):
        try:
            return cast(s)
        except (TypeError, ValueError):
            pass
    return {"True": True, "False": False, "None": None}.get(s, s)


def _search_runs(client: Any, exp_id: str, filt: str) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=filt, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _read_artifact(client: Any, run_id: str, name: str) -> str | None:
    """The text of artifact ``name`` (at the top level or one folder down) of a run, or None."""
    try:
        import tempfile

        arts = client.list_artifacts(run_id)
        paths = [a.path for a in arts if not a.is_dir]
        for a in arts:
            if a.is_dir:
                paths += [b.path for b in client.list_artifacts(run_id, a.path) if not b.is_dir]
        hit = next((p for p in paths if p.rsplit("/", 1)[-1] == name), None)
        if hit is None:
            return None
        key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # no progress bar for one small file
        old = os.environ.get(key)
        os.environ[key] = "false"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                return Path(client.download_artifacts(run_id, hit, tmp)).read_text()
        finally:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
    except Exception:  # noqa: BLE001 - artifacts are optional
        return None


def _pointer_resolver(client: Any, run_ids: dict[str, str]) -> Callable[[str], Path | None]:
    """trial_id -> the local ``path`` of the trial run's ``checkpoint.json`` pointer."""
    cache: dict[str, Path | None] = {}

    def resolve(trial_id: str) -> Path | None:
        if trial_id not in cache:
            text = (
                _read_artifact(client, run_ids[trial_id], "checkpoint.json")
                if (trial_id in run_ids)
                else None
            )
            try:
                path = json.loads(text).get("path") if text else None
            except (ValueError, AttributeError):
                path = None
            cache[trial_id] = Path(path) if isinstance(path, str) else None
        return cache[trial_id]

    return resolve


def _from_mlflow(spec: str, parent_run: str | None) -> Source:
    name, uri = parse_mlflow_spec(spec)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:  # pragma: no cover - mlflow is a dependency
        raise SourceError(f"SOURCE {spec}: mlflow is not installed ({e})") from None
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise SourceError(
            f"SOURCE {spec}: no MLflow experiment named {name!r} at {uri or 'the default store'}"
        )
    notes: list[str] = []
    parents = _search_runs(client, exp.experiment_id, f"tags.`{ROLE}` = 'sweep'")
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    parent = None
    if parent_run:
        parent = next((r for r in parents if r.info.run_id == parent_run), None)
        if parent is None:
            raise SourceError(f"SOURCE {spec}: no sweep run {parent_run!r} in experiment {name!r}")
    elif parents:
        parent = parents[0]
        if len(parents) > 1:
            notes.append(
                f"experiment has {len(parents)} sweep runs; reading the latest "
                f"({parent.info.run_id}); pass --parent-run to choose another"
            )
    children = _search_runs(client, exp.experiment_id, f"tags.`{ROLE}` = 'trial'")
    if parent is not None:
        children = [r for r in children if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    else:
        notes.append("no sweep (parent) run found: reading every trial run of the experiment")

    text = _read_artifact(client, parent.info.run_id, "search_space.yaml") if parent else None
    space = parse_yaml(text, f"{spec} search_space.yaml") if text else None
    searched_tags = [
        p.strip()
        for r in children
        for p in (r.data.tags.get(SEARCHED_TAG) or "").split(",")
        if p.strip()
    ]
    if space:
        params, objs, expected, log = _space_info(space)
        name = space.get("name") or name
    elif searched_tags:
        params = list(dict.fromkeys(searched_tags))
        objs, expected, log = parse_objectives(DEFAULT_OBJECTIVES), None, set()
        notes.append(
            "no search_space.yaml artifact on the sweep run: searched parameters from "
            "the tti_ray.searched tags; default objectives"
        )
    else:
        all_params: dict[str, set[str]] = {}
        for r in children:
            for k, v in r.data.params.items():
                all_params.setdefault(k, set()).add(v)
        params = [
            k
            for k in sorted(all_params)
            if len(all_params[k]) > 1 and k not in SEED_PARAMS and "." in k
        ]
        params = [k for k in params if all(k in r.data.params for r in children)]
        objs, expected, log = parse_objectives(DEFAULT_OBJECTIVES), None, set()
        notes.append(
            "no search_space.yaml artifact on the sweep run: searched parameters are "
            "the params that differ between trials; default objectives"
        )

    children.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    ended = sorted((r for r in children if r.info.end_time), key=lambda r: r.info.end_time)
    order = {r.info.run_id: k + 1 for k, r in enumerate(ended)}
    records = []
    for r in children:
        tags, p = r.data.tags, r.data.params
        values = {k: _value(p[k]) if k in p else None for k in params}
        status = tags.get(STATUS_TAG) or _MLFLOW_STATUS.get(r.info.status, TrialStatus.FAILED).value
        if status not in STATUSES:
            notes.append(f"run {r.info.run_id}: unknown tti_ray.status {status!r}, read as failed")
            status = TrialStatus.FAILED.value
        seed = next((_value(p[k]) for k in SEED_PARAMS if k in p), None)
        rec = {
            "trial_id": tags.get(TRIAL_TAG) or r.info.run_id[:8],
            "config_id": tags.get(CONFIG_TAG) or config_id(values),
            "status": status,
            "seed": seed,
            **values,
            **r.data.metrics,
            "completed_at": order.get(r.info.run_id)
            if status not in (TrialStatus.RUNNING, TrialStatus.PENDING)
            else None,
            "checkpoint": tags.get(CHECKPOINT_TAG) or "",
            "mlflow_run_id": r.info.run_id,
        }
        if FEASIBLE_TAG in tags:  # a constrained sweep: its fronts use feasible trials only
            rec["feasible"] = tags[FEASIBLE_TAG] == "true"
        records.append(rec)
    base = ["trial_id", "config_id", "status", "seed", *params]
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=base)
    metrics = sorted(c for c in df.columns if c not in base and "/" in c)
    rest = [c for c in df.columns if c not in base and c not in metrics]
    df = df[base + metrics + rest]
    run_ids = (
        dict(zip(df["trial_id"].astype(str), df["mlflow_run_id"], strict=True)) if len(df) else {}
    )
    return Source(
        "mlflow",
        name,
        f"{exp.name}@{uri or 'default'}",
        df,
        params,
        objs,
        expected,
        log,
        {},
        notes,
        tracking_uri=uri,
        parent_run_id=parent.info.run_id if parent is not None else None,
        resolve_checkpoint=_pointer_resolver(client, run_ids),
    )
