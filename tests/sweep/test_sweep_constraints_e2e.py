"""A real local-Ray sweep with constraints that some trials violate: only feasible trials reach
the front and the hypervolume, Optuna holds each trial's constraint values, and trials.csv and
the MLflow child runs say which trials are feasible."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from .conftest import SMALL_BASE, run_sweep_cli, write_space

pytestmark = pytest.mark.slow
K, DEAD, PPL = "interventions.topk.k", "val/dead_fraction/mean", "val/perplexity"


def test_constrained_sweep_keeps_infeasible_trials_off_the_front(tmp_path):
    base = {**SMALL_BASE, "interventions": {"topk": {"k": 1.0, "sites": ["mlp_hidden"]}}}
    space = write_space(
        tmp_path / "space.yaml", name="constrained", base=base,
        parameters={K: {"distribution": "uniform", "low": 0.05, "high": 1.0}},
        baseline={K: 1.0},
        constraints=[{"metric": DEAD, "max": 0.3}, {"metric": PPL, "max_ratio_to_baseline": 1.5}],
        objectives=[{"metric": PPL, "mode": "min"},
                    {"metric": "val/polysemanticity_calibrated/mean", "mode": "min"}],
        budget={"trials": 6}, searcher={"type": "tpe", "seed": 0, "n_startup_trials": 6},
        study_storage=f"sqlite:///{tmp_path / 'shared_studies.db'}",
    )
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "trials.csv")
    assert list(df.columns[:5]) == ["trial_id", "config_id", "status", "seed", "feasible"]
    assert set(df["status"]) == {"finished"} and len(df) == 6
    base_row = df[df[K] == 1.0]
    assert len(base_row) == 1 and base_row["feasible"].item()  # the baseline ran, first
    expect = (df[DEAD] <= 0.3) & (df[PPL] <= 1.5 * base_row[PPL].item())
    assert (df["feasible"] == expect).all()
    infeasible = set(df.loc[~df["feasible"], "trial_id"])
    assert infeasible and len(infeasible) < 6, df[[K, DEAD, PPL, "feasible"]]

    front = json.loads((out / "pareto.json").read_text())
    assert front["points"] and not {p["trial_id"] for p in front["points"]} & infeasible
    assert front["constraints"] == ["val/dead_fraction/mean <= 0.3",
                                    "val/perplexity <= 1.5 x baseline"]
    hv = json.loads((out / "hypervolume.json").read_text())
    assert hv["n_finished"] == 6 - len(infeasible) and hv["n_infeasible"] == len(infeasible)
    # the history counts only feasible trials: it first rises at a feasible one
    feasible_ids = set(df.loc[df["feasible"], "trial_id"])
    first_positive = next(h["trial_id"] for h in hv["history"] if h["hypervolume"] > 0)
    assert first_positive in feasible_ids

    study = optuna.load_study(study_name="constrained",
                              storage=f"sqlite:///{tmp_path / 'shared_studies.db'}")
    # the study is a first-class artifact: named objectives, trials linked to the sweep's
    assert study.metric_names == [PPL, "val/polysemanticity_calibrated/mean"]
    assert study.user_attrs["tti_ray.experiment_dir"] == str(out)
    assert study.user_attrs["tti_ray.reference_point"] == hv["reference_point"]
    links = {t.user_attrs["tti_ray.trial_ids"][0]: t for t in study.trials}
    assert set(links) == set(df["trial_id"])
    for _, row in df.iterrows():
        t = links[row["trial_id"]]
        assert t.number == row["optuna_trial"]
        assert t.user_attrs["tti_ray.config_id"] == row["config_id"]
        assert t.user_attrs["tti_ray.run_dirs"] == [str(out / "runs" / row["trial_id"])]
        assert t.user_attrs["tti_ray.status"] == "finished"
    by_k = {round(t.params[K], 9): t for t in study.trials}
    for _, row in df.iterrows():
        cons = by_k[round(row[K], 9)].constraints  # what Optuna's sampler sees
        assert cons["val/dead_fraction/mean <= 0.3"] == pytest.approx(row[DEAD] - 0.3, abs=1e-9)
        assert all(v <= 0 for v in cons.values()) == bool(row["feasible"])

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    run_ids = {r.data.tags["tti_ray.trial_id"]: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("constrained").experiment_id],
        "tags.`tti_ray.role` = 'trial'")}
    assert {t: links[t].user_attrs["tti_ray.mlflow_run_ids"] for t in links} == {
        t: [r] for t, r in run_ids.items()}
    exp = client.get_experiment_by_name("constrained")
    runs = client.search_runs([exp.experiment_id], "tags.`tti_ray.role` = 'trial'")
    tags = {r.data.tags["tti_ray.trial_id"]: r.data.tags.get("tti_ray.feasible") for r in runs}
    assert tags == {t: str(bool(f)).lower() for t, f in zip(df["trial_id"], df["feasible"],
                                                              strict=True)}

    # optuna-dashboard (its HTTP API) shows the study with the objectives' names and trial ids
    storage = f"sqlite:///{tmp_path / 'shared_studies.db'}"
    (summary,) = _dashboard_json(storage, "/api/studies")["study_summaries"]
    detail = _dashboard_json(storage, f"/api/studies/{summary['study_id']}")
    assert detail["name"] == "constrained"
    assert detail["objective_names"] == [PPL, "val/polysemanticity_calibrated/mean"]
    shown = {json.loads(a["value"])[0] for t in detail["trials"] for a in t["user_attrs"]
             if a["key"] == "tti_ray.trial_ids"}
    assert shown == set(df["trial_id"])

    # a second, fresh sweep into the same study storage is refused: it would join this study
    r2 = run_sweep_cli(str(space), "--out", str(tmp_path / "exp2"))
    assert r2.returncode == 2
    assert r2.stderr.strip().count("\n") == 0 and "already holds a study named" in r2.stderr
    assert not (tmp_path / "exp2").exists()


def _dashboard_json(storage: str, path: str) -> dict:
    """GET ``path`` from a real optuna-dashboard server on 127.0.0.1 (started and stopped here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
    proc = subprocess.Popen([exe, storage, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return json.load(r)
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
