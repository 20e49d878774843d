"""Fault injection with real processes and a real local Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import optuna
import pandas as pd
import pytest

from tests.sweep.conftest import ROOT, run_sweep_cli, sweep_cmd, write_space

pytestmark = pytest.mark.slow


def _records(path):
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_sigkilled_training_worker_resumes_from_its_checkpoint(tmp_path):
    space = write_space(
        tmp_path / "space.yaml", budget={"trials": 1}, concurrency=1,
        base={"preset": "tiny",
              "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
              "train": {"steps": 60, "batch_size": 4, "warmup_steps": 2, "eval_every": 10,
                        "ckpt_every": 10},
              "eval": {"val_batches": 1, "metric_tokens": 128}},
        parameters={"train.lr": {"values": [0.001]}}, searcher={"type": "grid"},
    )
    out = tmp_path / "exp"
    proc = subprocess.Popen(sweep_cmd(str(space), "--out", str(out), "--no-tracking"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, killed = time.time() + 300, None
        while time.time() < deadline and killed is None:
            runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
            for run in runs:
                recs = _records(run / "metrics.jsonl")
                if recs and recs[-1]["step"] >= 20 and (run / "starts.log").exists():
                    pid = int((run / "starts.log").read_text().split()[-1])
                    os.kill(pid, signal.SIGKILL)  # the Tune trial process running train_run
                    killed = (run, recs[-1]["step"])
                    break
            time.sleep(0.2)
        assert killed, "trial never reached step 20"
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run, _ = killed
    df = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    assert list(df["status"]) == ["finished"]
    kinds = [ln.split()[0] for ln in (run / "starts.log").read_text().splitlines()]
    assert kinds[0] == "train" and "resume" in kinds[1:]
    steps = [r["step"] for r in _records(run / "metrics.jsonl")]
    assert steps == list(range(10, 61, 10))  # no gap, no duplicate: resumed at a checkpoint


def test_diverging_trial_is_kept_out_of_the_front_and_the_sweep_goes_on(tmp_path):
    # λ = 1e38 times an entropy of a few nats overflows float32: the loss is inf at step 1
    space = write_space(
        tmp_path / "space.yaml", budget={"trials": 2}, searcher={"type": "grid"},
        parameters={"interventions.anti_poly.coef": {"values": [0.001, 1.0e38]}},
    )
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out), "--no-tracking")
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    by_coef = dict(zip(df["interventions.anti_poly.coef"], df["status"], strict=True))
    assert by_coef == {0.001: "finished", 1.0e38: "diverged"}
    front = pd.read_csv(out / "pareto.csv", dtype={"trial_id": str})
    diverged = set(df.loc[df["status"] == "diverged", "trial_id"])
    assert len(front) == 1 and not diverged & set(front["trial_id"])
    study = optuna.load_study(study_name="test_sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]


def test_unwritable_experiment_dir_fails_before_trials_start(tmp_path):
    space = write_space(tmp_path / "space.yaml")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for out in (blocker / "exp", "/proc/tti_ray_exp"):
        r = run_sweep_cli(str(space), "--out", str(out))
        assert r.returncode == 2, r.stderr[-2000:]
        line = r.stderr.strip().splitlines()
        assert len(line) == 1 and "--out" in line[0], r.stderr
    assert not any(tmp_path.glob("**/trials.csv"))
