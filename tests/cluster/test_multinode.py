"""A real two-node Ray cluster on 127.0.0.1: a head and a worker node started as separate
processes with ``ray start``, each advertising its own custom resource, Tune storage on an S3
protocol server (moto) on 127.0.0.1. A sweep submitted with ``--address`` must place trials on
both nodes; then the worker node is killed mid-sweep and the sweep must still complete on the head
with every finished trial kept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.sweep.conftest import ROOT, SMALL_BASE, write_space

# the tracking tests' moto S3 server (session-scoped, bucket BUCKET created)
from tests.tracking.conftest import (
    BUCKET,
    fake_aws_env,
    free_port,
    s3,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.slow

TRIALS = 6
STEPS = 200
RAY = str(Path(sys.executable).with_name("ray"))


def _ray_nodes(address: str, env: dict[str, str]) -> list[dict]:
    code = ("import json, ray; from tti_ray.sweep.ray_start import token_auth_like_auto;"
            "token_auth_like_auto(); ray.init(address=%r, logging_level='ERROR');"
            "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'res': n['Resources']}"
            " for n in ray.nodes()]))") % address
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _wait_nodes(address: str, env: dict[str, str], n: int, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [x for x in _ray_nodes(address, env) if x["alive"]]
        if len(alive) == n:
            return alive
        time.sleep(2)
    raise TimeoutError(f"{n} Ray nodes never came up")


def _kill_cluster(temp_dir: str) -> None:
    """SIGKILL every process of this cluster only (its temp dir is in their command lines):
    ``ray stop`` would also stop unrelated local Ray instances on the machine."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmd:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _table(out: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(out / "trials.csv", dtype={"trial_id": str, "node_id": str})
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["trial_id", "status", "node_id"])


@pytest.fixture
def cluster(s3, tmp_path):  # noqa: F811 - the imported fixture
    """Head (1 CPU, ``tti_head``) + worker node (1 CPU, ``tti_worker``), both on 127.0.0.1."""
    env = {**os.environ, **fake_aws_env(s3.endpoint),
           "AWS_ENDPOINT_URL": s3.endpoint, "PYTHONPATH": str(ROOT),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
           # token authentication, as a real cluster should run, with this test's own token
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="tti_mn_", dir="/tmp")  # short: Ray's socket paths
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", '--resources={"tti_head": 1}', *common],
        env=env, capture_output=True, text=True, timeout=180)
    if head.returncode != 0:
        _kill_cluster(temp_dir)
        pytest.fail(head.stdout[-2000:] + head.stderr[-2000:])
    log = (tmp_path / "worker_node.log").open("w")
    worker = subprocess.Popen(
        [RAY, "start", f"--address={address}", "--block", '--resources={"tti_worker": 1}',
         f"--dashboard-agent-listen-port={free_port()}", *common],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        nodes = _wait_nodes(address, env, 2)
        ids = {("worker" if "tti_worker" in n["res"] else "head"): n["id"] for n in nodes}
        yield {"address": address, "env": env, "worker": worker, "ids": ids, "s3": s3,
               "temp_dir": temp_dir}
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        _kill_cluster(temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_spans_two_nodes_and_survives_losing_one(cluster, tmp_path):
    base = {**SMALL_BASE, "train": {**SMALL_BASE["train"], "steps": STEPS, "eval_every": 40,
                                    "ckpt_every": 40}}
    space = write_space(
        tmp_path / "space.yaml", name="multinode", base=base,
        parameters={"train.lr": {"values": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]}},
        searcher={"type": "grid"}, budget={"trials": TRIALS}, concurrency=2,
        resources={"workers": 1, "cpus_per_worker": 1}, max_failures=3,
    )
    out = tmp_path / "exp"
    storage = f"s3://{BUCKET}/multinode"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tti_ray.sweep", str(space), "--out", str(out), "--address",
         cluster["address"], "--storage", storage, "--no-tracking"],
        cwd=ROOT, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    worker_id, head_id = cluster["ids"]["worker"], cluster["ids"]["head"]
    try:
        # wait until the worker node has finished a trial and is halfway through another one
        # (past a checkpoint, far from its end)
        deadline = time.time() + 600
        while time.time() < deadline:
            df = _table(out)
            on_worker = df[df["node_id"] == worker_id]
            running = on_worker[on_worker["status"] == "running"]
            if ((on_worker["status"] == "finished").any()
                    and running["steps"].between(40, STEPS - 60).any()):
                break
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("no trial finished on the worker node in time")
        before = _table(out)
        lost = before[(before["node_id"] == worker_id) & (before["status"] == "running")]
        assert len(lost) == 1
        finished_before = before[before["status"] == "finished"].set_index("trial_id")
        os.killpg(cluster["worker"].pid, signal.SIGKILL)  # the node dies with its raylet
        cluster["worker"].wait(timeout=60)

        stdout, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, stdout[-4000:]

    df = _table(out).set_index("trial_id")
    assert len(df) == TRIALS
    errors = {k: cluster["s3"].read(k).decode()[-1500:] for k in cluster["s3"].keys("multinode/")
              if k.endswith("error.txt")}
    assert (df["status"] == "finished").all(), (df["status"].to_dict(), errors)
    assert set(df["train.lr"]) == {1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3}
    # trials ran on both nodes, and the ones that finished before the loss are untouched
    assert {worker_id, head_id} <= set(df["node_id"])
    assert worker_id in set(finished_before["node_id"])
    for tid, row in finished_before.iterrows():
        assert df.loc[tid, "node_id"] == row["node_id"]
        assert df.loc[tid, "val/perplexity"] == pytest.approx(row["val/perplexity"])
    # the trial that was running on the lost node was restarted on the head and finished there
    for tid in lost["trial_id"]:
        assert df.loc[tid, "node_id"] == head_id
        assert df.loc[tid, "steps"] == STEPS
        # each launch of a trial appends to its starts.log (in the node's trial dir; both nodes
        # share this machine's disk): trained on the worker, then resumed from a checkpoint
        logs = list(Path(cluster["temp_dir"]).rglob(f"trial_{tid}/run/starts.log"))
        kinds = [line.split()[0] for f in logs for line in f.read_text().splitlines()]
        assert sorted(kinds) == ["resume", "train"], (logs, kinds)
    keys = cluster["s3"].keys("multinode/")
    assert any(k.endswith("experiment_state.json") or "experiment_state" in k for k in keys)
    assert any("/checkpoint_" in k for k in keys)
