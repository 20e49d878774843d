"""With no tracking flags a sweep logs to ``sqlite:///DIR/mlflow.db`` with artifacts under
``DIR/mlartifacts``, no server needed; nothing credential-like lands in the store."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from .conftest import ROOT, SECRETS, fake_aws_env, planted_base, subprocess_env, write_space

pytestmark = pytest.mark.slow


def test_default_local_store_without_flags(tmp_path):
    space = write_space(tmp_path / "space.yaml", name="local_sweep", base=planted_base(),
                        budget={"trials": 2})
    out = tmp_path / "exp"
    env = subprocess_env(fake_aws_env("http://127.0.0.1:9"))  # planted, never used
    r = subprocess.run([sys.executable, "-m", "tti_ray.sweep", str(space), "--out", str(out),
                        "--num-cpus", "2"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "WARNING: tracking" not in r.stdout + r.stderr
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("local_sweep")  # named after the search space
    assert exp.artifact_location == (out / "mlartifacts").as_uri()
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [x for x in runs if x.data.tags["tti_ray.role"] == "sweep"]
    children = [x for x in runs if x.data.tags["tti_ray.role"] == "trial"]
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["tti_ray.status"] for c in children} == {"finished"}
    for c in children:
        assert [m.step for m in client.get_metric_history(c.info.run_id, "val/perplexity")] == [
            10, 20]
    art = out / "mlartifacts" / parent.info.run_id / "artifacts"
    for name in ("search_space.yaml", "trials.csv", "pareto.json", "front.png"):
        assert (art / name).is_file(), name
    # the raw store and every artifact file: no planted credential anywhere
    files = [out / "mlflow.db", *(p for p in (out / "mlartifacts").rglob("*") if p.is_file())]
    for p in files:
        data = p.read_bytes()
        assert not any(s.encode() in data for s in SECRETS), p
