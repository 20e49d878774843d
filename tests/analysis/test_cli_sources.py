"""SOURCE readers: experiment directories and MLflow experiments (temp sqlite store)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.sources import SourceError, load_source, parse_mlflow_spec
from tests.analysis.conftest import (
    COEF,
    FAKE_TRIALS,
    POLY,
    PPL,
    partial_trials,
    write_experiment,
)


def test_parse_mlflow_spec():
    assert parse_mlflow_spec("mlflow:anti_poly@sqlite:///x/mlflow.db") == (
        "anti_poly",
        "sqlite:///x/mlflow.db",
    )
    assert parse_mlflow_spec("mlflow:anti_poly") == ("anti_poly", None)
    with pytest.raises(SourceError):
        parse_mlflow_spec("mlflow:@sqlite:///x.db")


def test_mlflow_round_trip(mlflow_store):
    uri, _, ids = mlflow_store
    src = load_source(f"mlflow:anti_poly@{uri}")
    df = src.trials
    assert src.kind == "mlflow" and src.parent_run_id == ids["parent"]
    assert any("2 sweep runs" in n for n in src.notes)  # the latest sweep is read, and it says so
    assert list(df["trial_id"]) == [t[0] for t in FAKE_TRIALS]  # not the old sweep's trial
    assert list(df["config_id"]) == [t[1] for t in FAKE_TRIALS]
    assert list(df["status"]) == [t[2] for t in FAKE_TRIALS]
    assert df[COEF].tolist() == [t[3] for t in FAKE_TRIALS]  # params back as numbers
    assert df[PPL].tolist() == [t[4] for t in FAKE_TRIALS]  # the latest logged value
    assert df[POLY].tolist() == [t[5] for t in FAKE_TRIALS]
    assert df["seed"].tolist() == [0, 0, 0]
    assert src.params == [COEF]  # from the search_space.yaml artifact, not every config param
    assert "model.n_layer" not in df.columns
    assert src.expected_trials == 4 and src.log_params == {COEF}
    assert df.loc[df["status"] == "finished", "completed_at"].notna().all()
    assert df.loc[df["status"] == "running", "completed_at"].isna().all()
    old = load_source(f"mlflow:anti_poly@{uri}", parent_run=ids["old_parent"])
    assert list(old.trials["trial_id"]) == ["old0"]


@pytest.mark.parametrize(
    "experiment, how",
    [
        ("no_space", "tti_ray.searched tags"),
        ("bare", "differ between trials"),  # the only param that differs between trials
    ],
)
def test_mlflow_without_search_space(mlflow_store, experiment, how):
    uri, _, _ = mlflow_store
    src = load_source(f"mlflow:{experiment}@{uri}")
    assert src.params == [COEF] and src.expected_trials is None
    assert any(how in n for n in src.notes)


def test_mlflow_checkpoint_pointer(mlflow_store):
    uri, _, _ = mlflow_store
    src = load_source(f"mlflow:anti_poly@{uri}")
    ck = src.checkpoint("t0")
    assert ck is not None and ck.name.startswith("ckpt_") and (ck / "model.safetensors").exists()
    assert src.checkpoint("t1") is None


def test_mlflow_and_directory_sources_give_the_same_front(mlflow_store, tmp_path):
    from tti_ray.fronts import pareto_table

    uri, _, _ = mlflow_store
    m = load_source(f"mlflow:anti_poly@{uri}")
    d = load_source(write_experiment(tmp_path / "exp", m.trials.drop(columns="mlflow_run_id")))
    a = pareto_table(m.trials, m.objective_spec, params=m.params)
    b = pareto_table(d.trials, d.objective_spec, params=d.params)
    pd.testing.assert_frame_equal(a[["trial_id", PPL, POLY]], b[["trial_id", PPL, POLY]])


def test_mlflow_errors(mlflow_store):
    uri, _, _ = mlflow_store
    with pytest.raises(SourceError, match="no MLflow experiment named 'nope'"):
        load_source(f"mlflow:nope@{uri}")
    with pytest.raises(SourceError, match="no sweep run"):
        load_source(f"mlflow:anti_poly@{uri}", parent_run="0" * 32)


def test_directory_without_search_space(tmp_path):
    src = load_source(write_experiment(tmp_path / "e", partial_trials()))
    assert src.params == [COEF] and src.expected_trials is None
    assert [str(o) for o in src.objectives] == [f"{PPL}:min", f"{POLY}:min"]
    with pytest.raises(SourceError, match="no trials.csv"):
        load_source(tmp_path)


def test_hex_ids_that_look_like_numbers_stay_strings(tmp_path):
    df = partial_trials()
    df["trial_id"] = ["1234e567", "00ab0001", "12345678", "a3", "a4", "a5", "a6"]
    df["config_id"] = ["5e12345678", *df["config_id"][1:]]
    src = load_source(write_experiment(tmp_path / "e", df))
    assert src.trials["trial_id"].tolist()[:3] == ["1234e567", "00ab0001", "12345678"]
    assert src.trials["config_id"].iloc[0] == "5e12345678"
