"""End-to-end sweeps against a real local Ray (started by the command), on the embedded data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from .conftest import ROOT, finished_ddp_run, run_sweep_cli, sweep_cmd, write_space

pytestmark = pytest.mark.slow
OBJ = ["val/perplexity", "val/polysemanticity/mean"]


def test_reduced_sweep_writes_every_output(tmp_path, space_file):
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space_file), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("trials.csv", "pareto.csv", "pareto.json", "hypervolume.json", "front.png",
                 "optuna.db", "search_space.yaml"):
        assert (out / name).exists(), name
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 3 and set(df["status"]) == {"finished"}
    assert list(df.columns[:4]) == ["trial_id", "config_id", "status", "seed"]
    assert {"interventions.anti_poly.coef", *OBJ, "checkpoint"} <= set(df.columns)
    assert df["checkpoint"].map(lambda p: os.path.isdir(p)).all()
    front = json.loads((out / "pareto.json").read_text())
    assert 1 <= front["n_points"] <= 3
    hv = json.loads((out / "hypervolume.json").read_text())
    assert hv["hypervolume"] > 0 and len(hv["history"]) == 3
    study = optuna.load_study(study_name="test_sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 3
    assert "Pareto front" in r.stdout


def test_dry_run_starts_nothing(tmp_path, space_file):
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space_file), "--out", str(out), "--dry-run")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["trials"] == 3 and plan["resources_per_trial"]["workers"] == 1
    assert not out.exists()


def test_bad_flags_exit_2_with_one_line(tmp_path, space_file):
    r = run_sweep_cli(str(space_file), "--resume", "--dry-run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = run_sweep_cli(str(space_file), "--out", str(tmp_path / "none"), "--resume")
    assert r.returncode == 2 and "--resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _finished_ids(out):
    path = out / "trials_state.json"
    if not path.exists():
        return set()
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError:
        return set()
    return {k for k, r in rows.items() if r["status"] == "finished"}


def _kill_session(sid: int) -> None:
    """SIGKILL what is left of a killed driver's session (Ray processes that moved to a
    process group of their own), and nothing else."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.getsid(int(p.name)) == sid:
                os.kill(int(p.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 4}, concurrency=1)
    out = tmp_path / "exp"
    proc = subprocess.Popen(
        sweep_cmd(str(space), "--out", str(out)), cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while len(_finished_ids(out)) < 2 and time.time() < deadline:
            assert proc.poll() is None, "sweep ended before it could be killed"
            time.sleep(0.5)
        done_before = _finished_ids(out)
        assert len(done_before) >= 2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    _kill_session(proc.pid)  # not `ray stop`: that would stop every Ray on the machine

    r = run_sweep_cli(str(space), "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 4 and set(df["status"]) == {"finished"}
    for tid in done_before:  # each finished trial trained exactly once, never again
        kinds = [ln.split()[0] for ln in (out / "runs" / tid / "starts.log").read_text().splitlines()]
        assert kinds[0] == "train" and set(kinds[1:]) <= {"replay"}, (tid, kinds)
        steps = [json.loads(ln)["step"] for ln in (out / "runs" / tid / "metrics.jsonl").open()]
        assert steps == sorted(set(steps)), (tid, steps)
    study = optuna.load_study(study_name="test_sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4


def test_two_worker_ddp_trial_shards_data_and_agrees_on_weights(tmp_path):
    space = write_space(
        tmp_path / "space.yaml",
        budget={"trials": 1},
        concurrency=1,
        # 2 × 0.5 CPU for the workers + 0.01 for the trial that drives them fit on 2 CPUs
        resources={"workers": 2, "cpus_per_worker": 0.5},
        max_failures=0,
    )
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    run = finished_ddp_run(out)
    assert (run / "metrics.json").exists()
