"""A tracking outage in the middle of training: training goes on, calls are spooled next to the
run's files with a warning, and replayed when the server answers again. The server is reached
through a TCP proxy that plays dead (refuses connections and drops open ones)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tti_ray.config import load_config
from tti_ray.sweep.space import load_search_space
from tti_ray.tracking import SweepTracker, resolve_tracking, track_run, track_trial
from tti_ray.tracking import runs as runs_mod
from tti_ray.train import train_run

from .conftest import BUCKET, SMALL_BASE, write_space

pytestmark = pytest.mark.slow


class Toggle:
    """Inner reporter that takes the server down after one step and brings it back later."""

    def __init__(self, proxy, down_at: int, up_at: int) -> None:
        self.proxy, self.down_at, self.up_at = proxy, down_at, up_at
        self.steps: list[int] = []

    def report(self, metrics, *, step, checkpoint=None):
        self.steps.append(step)
        if step == self.down_at:
            self.proxy.down()
        if step == self.up_at:
            self.proxy.up()


def test_standalone_run_survives_an_outage_and_replays(tmp_path, proxy, mlflow_server, s3,
                                                       capsys):
    base = {**SMALL_BASE, "name": "outage_run",
            "train": {**SMALL_BASE["train"], "steps": 30, "eval_every": 5, "ckpt_every": 15}}
    cfg = load_config(raw=base)
    out = tmp_path / "run"
    uri = f"http://127.0.0.1:{proxy.port}"
    toggle = Toggle(proxy, down_at=10, up_at=25)
    with track_run(uri, None, cfg, out) as run:
        final = train_run(cfg, run.wrap(toggle), out)
        assert run.client.n_spooled > 0  # steps 15..25 went to the spool
    assert final["status"] == "finished" and toggle.steps == [5, 10, 15, 20, 25, 30]
    err = capsys.readouterr().err
    assert "not answering" in err and "is back: replayed" in err
    assert not list(out.glob("mlflow_spool*.jsonl"))  # everything replayed

    client = mlflow_server.client()
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    r = client.get_run(run_id)
    assert r.data.tags["tti_ray.role"] == "run" and r.data.tags["tti_ray.status"] == "finished"
    assert r.info.status == "FINISHED"
    hist = client.get_metric_history(run_id, "val/perplexity")
    assert sorted(m.step for m in hist) == [5, 10, 15, 20, 25, 30]  # nothing lost
    local = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in local] == [5, 10, 15, 20, 25, 30]
    # the server's own artifact root (proxied to S3): the plot is in the bucket
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "curves.png"}
    assert any(k.startswith("server/") and k.endswith("/curves.png") for k in s3.keys("server/"))


def test_sweep_driver_and_trial_ride_out_an_outage(tmp_path, proxy, mlflow_server, monkeypatch,
                                                   capsys):
    """The two sides of a sweep in one process: a trial's child run and the driver's parent run,
    with the server gone between the trial's first and last report and during a table update."""
    monkeypatch.setattr(runs_mod, "TRIAL_FLUSH_S", 1.0)
    space = load_search_space(write_space(tmp_path / "space.yaml", name="outage_sweep"))
    exp = tmp_path / "exp"
    exp.mkdir()
    tc = resolve_tracking(exp_dir=exp, experiment_name="outage_sweep",
                          tracking_uri=f"http://127.0.0.1:{proxy.port}", artifact_store=None)
    tracker = SweepTracker.start(tc, exp, space, resume=False)
    run_dir = exp / "runs" / "t1"
    cfg = load_config(raw=SMALL_BASE)
    with track_trial(tracker.trial_meta(), cfg, trial_id="t1", config_id="c1",
                     out_dir=run_dir) as run:
        rep = run.wrap(None)
        rep.report({"val/perplexity": 10.0, "train/loss": 2.0}, step=10)
        proxy.down()
        rep.report({"val/perplexity": 9.0, "train/loss": 1.5}, step=20)
        rows = [{"step": 10, "val/perplexity": 10.0}, {"step": 20, "val/perplexity": 9.0}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "metrics.json").write_text(json.dumps({**rows[-1], "status": "finished"}))
    assert list(run_dir.glob("mlflow_spool*.jsonl"))  # the trial ended while the store was away

    df = pd.DataFrame([{"trial_id": "t1", "config_id": "c1", "status": "finished", "seed": 0,
                        "interventions.anti_poly.coef": 0.01, "val/perplexity": 9.0,
                        "checkpoint": "", "steps": 20, "completed_at": 1, "node_id": None}])
    df.to_csv(exp / "trials.csv", index=False)
    tracker.update(df)  # uploads from the driver's background thread, spooled while down
    proxy.up()
    tracker.finish(df)
    assert "not answering" in capsys.readouterr().err
    assert not list(exp.rglob("mlflow_spool*.jsonl"))

    client = mlflow_server.client()
    parent = client.get_run(tracker.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["tti_ray.status"] == "finished"
    assert "trials.csv" in {a.path for a in client.list_artifacts(tracker.parent_run_id)}
    (child,) = client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{tracker.parent_run_id}'")
    assert child.data.tags["tti_ray.status"] == "finished" and child.info.status == "FINISHED"
    hist = client.get_metric_history(child.info.run_id, "val/perplexity")
    assert [(m.step, m.value) for m in hist] == [(10, 10.0), (20, 9.0)]
    assert BUCKET  # (the server proxies artifacts to the moto bucket)
