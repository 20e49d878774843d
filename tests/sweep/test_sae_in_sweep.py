"""SAE evaluation triggered on finished checkpoints, end to end with a real local Ray."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from .conftest import run_sweep_cli, write_space

pytestmark = pytest.mark.slow
SAE = {"cpus": 1, "config": {"kind": "topk", "k": 8, "expansion": 4, "tokens": 4096,
                             "batch_size": 256, "eval_tokens": 512}}
SAE_KEYS = ["sae/l0", "sae/mse", "sae/fvu", "sae/explained_variance", "sae/dead_fraction",
            "sae/dense_fraction", "sae/ce_loss_score", "sae/delta_ce", "sae/kl"]


def test_every_finished_trial_gets_sae_metrics(tmp_path):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2}, sae_eval=SAE)
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    trials = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    fin = trials[trials["status"] == "finished"]
    assert len(fin) == 2
    for key in SAE_KEYS:
        assert fin[key].notna().all(), key
    assert fin["sae/l0"].between(0, 8 + 1e-6).all()  # TopK k = 8
    pareto = pd.read_csv(out / "pareto.csv")
    assert {"sae/l0", "sae/fvu"} <= set(pareto.columns)
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test_sweep")
    runs = client.search_runs([exp.experiment_id], "tags.`tti_ray.role` = 'trial'")
    assert len(runs) == 2
    for run in runs:
        assert "sae/fvu" in run.data.metrics and "sae/ce_loss_score" in run.data.metrics


def test_sae_metric_as_objective_is_evaluated_inside_the_trial(tmp_path):
    space = write_space(
        tmp_path / "space.yaml", budget={"trials": 1}, sae_eval=SAE, concurrency=1,
        objectives=[{"metric": "val/perplexity", "mode": "min"},
                    {"metric": "sae/fvu", "mode": "min"}],
    )
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="test_sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and len(trial.values) == 2
