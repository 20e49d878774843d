"""What ``--resume`` restores is checked before anything runs.

At the first start the sweep records, in ``sweep_meta.json``, the SHA-256 of its resolved search
space and how it was made (file, ``--set``, ``--preset``). ``--resume`` then refuses, in one line
with exit code 2:

* a search-space file that no longer resolves to the same space (edited between stop and
  resume: its edits would otherwise be silently ignored), naming the first key that differs;
* a Tune experiment state that is missing, unreadable or not Tune's (Tune would log a restore
  failure and start the sweep again, training past the budget), or that holds more trials than
  the budget;
* a ``trials_state.json`` that is not the trial table this code writes.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from tti_ray.cli import UsageError
from tti_ray.io import atomic_write_text
from tti_ray.sweep.space import SearchSpace, load_search_space
from tti_ray.trials import STATUSES

META_FILE = "sweep_meta.json"


def space_hash(space: SearchSpace) -> str:
    blob = json.dumps(space.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_meta(exp_dir: Path, space: SearchSpace, origin: dict[str, Any] | None) -> None:
    meta = {"space_sha256": space_hash(space), **(origin or {})}
    atomic_write_text(exp_dir / META_FILE, json.dumps(meta, indent=1))


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume: {path}: unreadable {what} ({_short(e)})") from None


def _short(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def check_space_unchanged(exp_dir: Path, search_space: str | Path) -> None:
    """The file given to ``--resume`` (with the first start's ``--set``/``--preset``) must still
    resolve to the space the sweep started with."""
    meta_path = exp_dir / META_FILE
    if not meta_path.exists():
        return  # a sweep started before this check existed
    meta = _read_json(meta_path, "sweep metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("space_sha256"), str):
        raise UsageError(f"--resume: {meta_path}: not a tti_ray sweep metadata file")
    now = load_search_space(search_space, meta.get("sets") or [], preset=meta.get("preset"))
    if space_hash(now) == meta["space_sha256"]:
        return
    key = _first_difference(exp_dir / "search_space.yaml", now)
    raise UsageError(
        f"--resume: {search_space} changed since the sweep in {exp_dir} started"
        f"{f' ({key} differs)' if key else ''}; restore it, or start a new sweep with another --out"
    )


def _first_difference(saved_path: Path, now: SearchSpace) -> str | None:
    try:
        saved = load_search_space(saved_path).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - only used to name the key
        return None
    return _diff(saved, now.model_dump(mode="json"), "")


def _diff(a: Any, b: Any, prefix: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
            if d:
                return d
        return None
    return None if a == b else (prefix or "<top>")


def check_restorable(tune_dir: str, exp_dir: Path, space: SearchSpace) -> None:
    """Tune's state and the trial table must be readable and consistent with the budget."""
    from ray.tune import Tuner

    if not Tuner.can_restore(tune_dir):
        raise UsageError(f"--resume: no sweep to resume at {tune_dir}")
    if "://" not in tune_dir:  # remote storage: Tune reads it; only local files are checked
        _check_local_tune_state(Path(tune_dir), space)
    state = exp_dir / "trials_state.json"
    if state.exists():
        rows = _read_json(state, "trial table")
        bad = not isinstance(rows, dict) or any(
            not isinstance(r, dict) or r.get("trial_id") != k or r.get("status") not in STATUSES
            or not isinstance(r.get("metrics", {}), dict)
            for k, r in (rows.items() if isinstance(rows, dict) else [])
        )
        if bad:
            raise UsageError(f"--resume: {state}: not a tti_ray trial table (rows keyed by "
                             "trial_id with a known status)")


def _check_local_tune_state(tune: Path, space: SearchSpace) -> None:
    states = sorted(tune.glob("experiment_state-*.json"))
    if not states:
        raise UsageError(f"--resume: {tune}: no Tune experiment state")
    latest = states[-1]
    data = _read_json(latest, "Tune experiment state")
    trials = data.get("trial_data") if isinstance(data, dict) else None
    if not isinstance(trials, list) or not isinstance(data.get("runner_data"), dict):
        raise UsageError(f"--resume: {latest}: not a Tune experiment state (no trial_data)")
    ids = []
    for entry in trials:
        try:
            ids.append(json.loads(entry[0])["trial_id"])
        except (TypeError, KeyError, IndexError, json.JSONDecodeError) as e:
            raise UsageError(f"--resume: {latest}: unreadable trial entry ({_short(e)})") \
                from None
    if len(ids) > space.n_trials():
        raise UsageError(f"--resume: {latest}: holds {len(ids)} trials, more than the budget of "
                         f"{space.n_trials()}")
    pkl = tune / "tuner.pkl"
    try:
        with pkl.open("rb") as f:
            pickle.load(f)  # noqa: S301 - Tune's own state, which Tune unpickles next anyway
    except Exception as e:  # noqa: BLE001 - any failure means Tune cannot restore it
        raise UsageError(f"--resume: {pkl}: unreadable Tune state ({_short(e)})") from None
