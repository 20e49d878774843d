"""A real sweep against a real ``mlflow server`` with an S3 (moto) artifact store, read back
through the MLflow client and boto3; credentials planted in env and config stay out of MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tti_ray.tracking.redact import REDACTED, flatten

from .conftest import BUCKET, CONFIG_KEY_ID, CONFIG_SECRET, SECRETS

pytestmark = pytest.mark.slow
OBJ = ["val/perplexity", "val/polysemanticity/mean"]
SEARCHED = "interventions.anti_poly.coef"


def _trials(out):
    return pd.read_csv(out / "trials.csv", dtype={"trial_id": str, "config_id": str})


def test_parent_run_and_one_child_per_trial(served_sweep):
    s = served_sweep
    tags = s.parent.data.tags
    assert tags["tti_ray.role"] == "sweep" and tags["tti_ray.status"] == "finished"
    assert s.parent.info.status == "FINISHED"
    assert tags["tti_ray.searched"] == SEARCHED
    assert s.parent.data.params["budget.trials"] == "2"
    assert s.parent.data.metrics["sweep/trials_finished"] == 2.0
    trials = _trials(s.out)
    assert len(s.children) == len(trials) == 2
    for c in s.children:
        t = c.data.tags
        row = trials[trials.trial_id == t["tti_ray.trial_id"]].iloc[0]
        assert t["mlflow.parentRunId"] == s.parent.info.run_id
        assert t["tti_ray.role"] == "trial" and t["tti_ray.status"] == row.status == "finished"
        assert c.info.status == "FINISHED" and c.info.run_name == f"trial_{row.trial_id}"
        assert t["tti_ray.config_id"] == row.config_id
        assert t["tti_ray.searched"] == SEARCHED
        assert t["tti_ray.checkpoint"] == row.checkpoint


def test_params_are_the_flattened_resolved_config(served_sweep):
    s = served_sweep
    trials = _trials(s.out)
    for c in s.children:
        tid = c.data.tags["tti_ray.trial_id"]
        local = yaml.safe_load((s.out / "runs" / tid / "config.yaml").read_text())
        local.pop("provenance")
        assert set(c.data.params) == set(flatten(local))
        coef = float(c.data.params[SEARCHED])  # the searched param under its dotted path
        assert coef == trials.set_index("trial_id").loc[tid, SEARCHED]
        assert coef == local["interventions"]["anti_poly"]["coef"]
        assert c.data.params["train.steps"] == "20" and c.data.params["model.n_layer"] == "1"
        assert c.data.params["data.hf_dataset"] == REDACTED  # planted credential withheld


def test_metric_histories_follow_every_eval_step(served_sweep):
    s = served_sweep
    for c in s.children:
        run_dir = s.out / "runs" / c.data.tags["tti_ray.trial_id"]
        records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [10, 20]
        names = {k for k, v in records[-1].items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        assert names <= set(c.data.metrics)  # same names as the metrics module
        for name in [*OBJ, "train/loss", "val/polysemanticity/mlp_hidden/layer_0"]:
            hist = s.client.get_metric_history(c.info.run_id, name)
            assert [m.step for m in hist] == [10, 20], name
            assert [m.value for m in hist] == pytest.approx([r[name] for r in records]), name


def test_artifacts_through_mlflow_and_boto3(served_sweep, tmp_path):
    s = served_sweep
    pid = s.parent.info.run_id
    parent_files = {a.path for a in s.client.list_artifacts(pid)}
    assert {"search_space.yaml", "trials.csv", "pareto.csv", "pareto.json", "hypervolume.json",
            "front.png"} <= parent_files
    got = mlflow.artifacts.download_artifacts(run_id=pid, artifact_path="trials.csv",
                                              dst_path=str(tmp_path), tracking_uri=s.server.url)
    local = (s.out / "trials.csv").read_bytes()
    assert Path(got).read_bytes() == local
    # the object is in the bucket, under the --artifact-store prefix
    assert s.experiment.artifact_location == f"s3://{BUCKET}/sweeps"
    prefix = s.parent.info.artifact_uri.removeprefix(f"s3://{BUCKET}/")
    assert prefix.startswith("sweeps/")
    assert s.s3.read(f"{prefix}/trials.csv") == local
    assert s.s3.read(f"{prefix}/front.png")[:4] == b"\x89PNG"
    for c in s.children:
        files = {a.path for a in s.client.list_artifacts(c.info.run_id)}
        assert {"config.yaml", "curves.png", "checkpoint.json"} <= files
        key = c.info.artifact_uri.removeprefix(f"s3://{BUCKET}/")
        assert s.s3.read(f"{key}/curves.png")[:4] == b"\x89PNG"
        pointer = json.loads(s.s3.read(f"{key}/checkpoint.json"))
        tid = c.data.tags["tti_ray.trial_id"]
        assert pointer["path"] == str((s.out / "runs" / tid / "checkpoint").resolve())
        assert pointer["step"] == 20


def test_no_credentials_in_any_param_tag_or_artifact(served_sweep, tmp_path):
    s = served_sweep
    # not vacuous: the planted values did reach the local experiment files
    assert CONFIG_KEY_ID in (s.out / "search_space.yaml").read_text()
    assert CONFIG_SECRET in (s.out / "search_space.yaml").read_text()
    for run in [s.parent, *s.children]:
        for k, v in [*run.data.params.items(), *run.data.tags.items()]:
            assert not any(sec in k or sec in v for sec in SECRETS), (k, v)
        dst = tmp_path / run.info.run_id
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(dst),
                                            tracking_uri=s.server.url)
        files = [p for p in dst.rglob("*") if p.is_file()]
        assert files
        for p in files:
            data = p.read_bytes()
            assert not any(sec.encode() in data for sec in SECRETS), p
    keys = s.s3.keys("sweeps/")
    assert len(keys) >= 6 + 2 * 3
    for key in keys:
        data = s.s3.read(key)
        assert not any(sec.encode() in data for sec in SECRETS), key
