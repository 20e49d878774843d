"""Reliability from the outside (issue 22), with real processes: a locked experiment directory,
honest interrupts, resources checked before Ray waits forever, resume that refuses broken state,
and a Ray started outside the suite that survives it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.test_bad_inputs import assert_one_line_exit_2, run
from tests.sweep.conftest import ROOT, SMALL_BASE, sweep_cmd, write_space
from tests.tracking.conftest import free_port

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def _popen(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(sweep_cmd(*args), cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(sweep_cmd(*args), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` (but the lock file) with the SHA-256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".tti_ray.lock"}


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the sweep ended first ({proc.returncode}): "
                                 f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _steps_logged(out: Path) -> int:
    best = 0
    for m in (out / "runs").glob("*/metrics.jsonl") if (out / "runs").exists() else []:
        lines = [ln for ln in m.read_text().splitlines() if ln.strip()]
        if lines:
            best = max(best, json.loads(lines[-1])["step"])
    return best


# -- 1. the experiment directory is locked ---------------------------------------------------------
def test_second_sweep_into_the_same_out_is_refused_and_the_first_loses_nothing(tmp_path):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2})
    out = tmp_path / "exp"
    first = _popen(str(space), "--out", str(out), "--no-tracking", log=tmp_path / "first.log")
    try:
        _wait_for(lambda: (out / ".tti_ray.lock").exists()
                  and (out / ".tti_ray.lock").read_text().strip(), 120, "the lock", first)
        second = _cli(str(space), "--out", str(out), "--no-tracking")
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert "--out" in lines[0] and "in use" in lines[0] and f"pid {first.pid}" in lines[0]
        resumed = _cli(str(space), "--out", str(out), "--no-tracking", "--resume")
        assert resumed.returncode == 2 and "in use" in resumed.stderr, resumed.stderr[-2000:]
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        _stop(first)
    df = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    assert list(df["status"]) == ["finished", "finished"]
    assert len(pd.read_csv(out / "pareto.csv")) >= 1
    assert (out / ".tti_ray.lock").read_text() == ""  # released cleanly


def test_second_train_into_the_same_out_is_refused(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({**SMALL_BASE, "train": {**SMALL_BASE["train"], "steps": 100000}}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tti_ray.train", str(cfg), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        _wait_for(lambda: (out / "metrics.jsonl").exists(), 120, "training", first)
        before = (out / "config.yaml").read_bytes()
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert "in use" in lines[0] and f"pid {first.pid}" in lines[0]
        assert (out / "config.yaml").read_bytes() == before
    finally:
        _stop(first)
    # the holder was SIGKILLed: the kernel released its lock, and the next taker sees whose
    from tti_ray.lock import DirLock

    with DirLock(out) as lock:
        assert lock.stale is not None and f"pid {first.pid}" in lock.stale


# -- 2. SIGINT / SIGTERM are interrupts, not successes ---------------------------------------------
def _mlflow_runs(out: Path) -> list[tuple[str, str]]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test_sweep")
    return [(r.data.tags.get("tti_ray.role", ""), r.info.status)
            for r in client.search_runs([exp.experiment_id])]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_driver_is_an_interrupt_and_resume_completes(tmp_path, sig):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 2}, concurrency=2,
                        base={**SMALL_BASE, "train": {**SMALL_BASE["train"], "steps": 200,
                                                      "eval_every": 10, "ckpt_every": 10}})
    out = tmp_path / "exp"
    proc = _popen(str(space), "--out", str(out), log=tmp_path / "sweep.log")
    try:
        _wait_for(lambda: _steps_logged(out) >= 20, 480, "a trial at step 20", proc)
        os.kill(proc.pid, sig)  # the driver only, as a terminal's Ctrl-C or a scheduler would
        rc = proc.wait(timeout=120)
        err = proc.stderr.read()
    finally:
        _stop(proc)
    assert rc == 128 + sig, (rc, err[-3000:])
    # Ray's log monitor may still print a trial's last lines after it: look for the line itself
    assert "tti_ray.sweep: interrupted; continue with --resume" in err.splitlines(), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    df = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    assert len(df) == 2 and "finished" not in set(df["status"])  # the tables as they were
    runs = _mlflow_runs(out)
    assert ("sweep", "KILLED") in runs and all(s != "RUNNING" for _, s in runs), runs
    assert (out / ".tti_ray.lock").read_text() == ""
    if sig == signal.SIGTERM:
        return  # the resume path is the same for both signals; run it once
    r = _cli(str(space), "--out", str(out), "--resume", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import optuna

    df = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    assert list(df["status"]) == ["finished", "finished"] and set(df["steps"]) == {200}
    study = optuna.load_study(study_name="test_sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]  # not past budget
    assert ("sweep", "FINISHED") in _mlflow_runs(out)


# -- 4. resume validates what it restores ----------------------------------------------------------
@pytest.fixture(scope="module")
def stopped_sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("stopped")
    space = write_space(d / "space.yaml", budget={"trials": 2})
    out = d / "exp"
    r = _cli(str(space), "--out", str(out), "--no-tracking")
    assert r.returncode == 0, r.stderr[-3000:]
    return space, out


def _latest_state(out: Path) -> Path:
    return sorted((out / "tune").glob("experiment_state-*.json"))[-1]


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


CORRUPTIONS = {
    "truncated_experiment_state": (lambda out: _truncate(_latest_state(out)),
                                   "unreadable Tune experiment state"),
    "foreign_experiment_state": (lambda out: _latest_state(out).write_text('{"trials": []}'),
                                 "not a Tune experiment state"),
    "garbage_tuner_pkl": (lambda out: (out / "tune" / "tuner.pkl").write_bytes(b"\x80\x05junk"),
                          "tuner.pkl: unreadable Tune state"),
    "truncated_trials_state": (lambda out: _truncate(out / "trials_state.json"),
                               "trials_state.json: unreadable trial table"),
    "foreign_trials_state": (lambda out: (out / "trials_state.json").write_text('{"a": [1]}'),
                             "not a tti_ray trial table"),
    "no_tune_state": (lambda out: [p.unlink() for p in (out / "tune").glob("experiment_state*")],
                      "no Tune experiment state"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_resume_refuses_corrupt_state_and_changes_nothing(tmp_path, stopped_sweep, case):
    import shutil

    space, done = stopped_sweep
    out = tmp_path / "exp"
    shutil.copytree(done, out)
    corrupt, needle = CORRUPTIONS[case]
    corrupt(out)
    before = _snapshot(out)
    r = run("tti_ray.sweep", str(space), "--out", str(out), "--resume", "--no-tracking")
    assert_one_line_exit_2(r, "--resume", needle)
    assert _snapshot(out) == before


@pytest.mark.parametrize(("edit", "key"), [
    ({"budget": {"trials": 5}}, "budget.trials"),
    ({"parameters": {"interventions.anti_poly.coef": {"distribution": "loguniform",
                                                      "low": 1e-3, "high": 1e-1}}},
     "parameters.interventions.anti_poly.coef.low"),
])
def test_resume_refuses_a_search_space_edited_since_the_start(tmp_path, stopped_sweep, edit, key):
    import shutil

    _, done = stopped_sweep
    out = tmp_path / "exp"
    shutil.copytree(done, out)
    space = write_space(tmp_path / "space.yaml", **{"budget": {"trials": 2}, **edit})
    before = _snapshot(out)
    r = run("tti_ray.sweep", str(space), "--out", str(out), "--resume", "--no-tracking")
    assert_one_line_exit_2(r, "--resume", "changed since the sweep", key)
    assert _snapshot(out) == before


# -- 3 + 10. resources against a real cluster; a Ray started outside the suite survives it ---------
@pytest.fixture(scope="module")
def outside_ray():
    """A Ray head started the way a user would (``ray start``), in its own temp dir, with 1 CPU;
    stopped at the end by killing its own processes (never ``ray stop``, which stops every Ray
    on the machine)."""
    from tests.cluster.test_multinode import _kill_cluster

    temp_dir = tempfile.mkdtemp(prefix="tti_out_", dir="/tmp")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    r = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1",
                        "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1"],
                       env=env, capture_output=True, text=True, timeout=180)
    try:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield {"address": f"127.0.0.1:{port}", "temp_dir": temp_dir}
    finally:
        _kill_cluster(temp_dir)


def _outside_pids(temp_dir: str) -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp_dir.encode() in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def test_ray_started_outside_the_suite_survives_a_sweep(tmp_path, outside_ray):
    before = _outside_pids(outside_ray["temp_dir"])
    assert before
    space = write_space(tmp_path / "space.yaml", budget={"trials": 1})
    r = _cli(str(space), "--out", str(tmp_path / "exp"), "--no-tracking")
    assert r.returncode == 0, r.stderr[-3000:]
    assert before <= _outside_pids(outside_ray["temp_dir"])  # every process still there
    # and the sweep did not run on it: its trial's node is not the outside head
    from tests.cluster.test_multinode import _ray_nodes

    (node,) = _ray_nodes(outside_ray["address"], {**os.environ})
    assert node["alive"]
    df = pd.read_csv(tmp_path / "exp" / "trials.csv", dtype={"node_id": str})
    assert node["id"] not in set(df["node_id"])


def test_trial_larger_than_every_node_of_a_cluster_is_refused(tmp_path, outside_ray):
    space = write_space(tmp_path / "space.yaml", budget={"trials": 1},
                        resources={"workers": 1, "cpus_per_worker": 2})
    out = tmp_path / "exp"
    t0 = time.time()
    r = _cli(str(space), "--out", str(out), "--no-tracking", "--address", outside_ray["address"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "resources.cpus_per_worker" in lines[0] and "needs 2 CPU" in lines[0]
    assert "has 1" in lines[0] and outside_ray["address"] in lines[0]
    assert not out.exists() and time.time() - t0 < 120


def test_unreachable_address_fails_fast_in_one_line(tmp_path):
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "exp"
    t0 = time.time()
    r = _cli(str(space), "--out", str(out), "--address", f"127.0.0.1:{free_port()}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "--address 127.0.0.1:" in lines[0] and "cannot reach" in lines[0]
    assert not out.exists() and time.time() - t0 < 60
