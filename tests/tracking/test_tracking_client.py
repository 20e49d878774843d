"""Retry, spool and replay of :class:`ResilientClient` against a scripted fake MLflow client."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tti_ray.tracking.client import ResilientClient, replay_dir


class Down(Exception):
    """What a dead server looks like: MLflow's wrapped connection error (no client error code)."""

    error_code = "INTERNAL_ERROR"


class Rejected(Exception):
    error_code = "INVALID_PARAMETER_VALUE"


class FakeMlflow:
    def __init__(self) -> None:
        self.up = True
        self.calls: list[tuple] = []
        self.n_runs = 0
        self.reject_next = False

    def _check(self):
        if not self.up:
            raise Down("API request to http://x failed with exception Connection refused")
        if self.reject_next:
            self.reject_next = False
            raise Rejected("bad param")

    def create_run(self, experiment_id, run_name=None, tags=None):
        self._check()
        self.n_runs += 1
        rid = f"run{self.n_runs}"
        self.calls.append(("create_run", rid, run_name))
        return SimpleNamespace(info=SimpleNamespace(run_id=rid))

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        self._check()
        self.calls.append(("log_batch", run_id, [(m.key, m.step) for m in metrics]))

    def log_artifact(self, run_id, local_path, artifact_path=None):
        self._check()
        self.calls.append(("log_artifact", run_id, local_path))

    def update_run(self, run_id, status=None, name=None):
        self._check()
        self.calls.append(("update_run", run_id, status))

    def set_terminated(self, run_id, status=None, end_time=None):
        self._check()
        self.calls.append(("set_terminated", run_id, status))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def make(tmp_path, fake):
    clock = Clock()
    return ResilientClient("http://x", tmp_path, client=fake, clock=clock, sleep=clock.sleep,
                           retries=2, backoff=0.5, probe=5.0, max_probe=20.0), clock


def metric(step):
    return [["val/perplexity", 1.0, 0, step]]


def test_online_calls_go_straight_through(tmp_path):
    fake = FakeMlflow()
    c, clock = make(tmp_path, fake)
    rid = c.create_run("1", "r", {})
    c.log_batch(rid, metrics=metric(1))
    assert fake.calls == [("create_run", "run1", "r"), ("log_batch", "run1", [("val/perplexity", 1)])]
    assert not c.spool.exists() and clock.slept == []


def test_outage_retries_then_spools_then_replays_in_order(tmp_path, capsys):
    fake = FakeMlflow()
    c, clock = make(tmp_path, fake)
    rid = c.create_run("1", "r", {})
    fake.up = False
    c.log_batch(rid, metrics=metric(1))  # 3 attempts with backoff, then offline
    assert clock.slept == [0.5, 1.0] and c.offline
    assert "not answering" in capsys.readouterr().err
    c.log_batch(rid, metrics=metric(2))  # offline: spooled at once, no waiting
    c.set_terminated(rid, "FINISHED")
    assert clock.slept == [0.5, 1.0]
    lines = [json.loads(ln) for ln in c.spool.read_text().splitlines()]
    assert [r["op"] for r in lines] == ["log_batch", "log_batch", "set_terminated"]

    clock.t += 1  # before the probe time: still spooling, the server is not asked
    fake.up = True
    c.log_batch(rid, metrics=metric(3))
    assert len(fake.calls) == 1
    clock.t += 10  # past the probe: the spool is replayed first, then the new call
    c.log_batch(rid, metrics=metric(4))
    steps = [call[2][0][1] for call in fake.calls if call[0] == "log_batch"]
    assert steps == [1, 2, 3, 4]
    assert fake.calls[3] == ("set_terminated", "run1", "FINISHED")
    assert not c.spool.exists() and not c.offline
    assert "is back: replayed 4" in capsys.readouterr().err


def test_probe_interval_backs_off(tmp_path):
    fake = FakeMlflow()
    c, clock = make(tmp_path, fake)
    fake.up = False
    c.log_batch("r", metrics=metric(1))
    probes = []
    for _ in range(40):
        clock.t += 1
        before = c._next_probe
        c.log_batch("r", metrics=metric(1))
        if c._next_probe != before:
            probes.append(c._interval)
    assert probes[:3] == [10.0, 20.0, 20.0]  # doubling, capped at max_probe


def test_run_created_offline_gets_a_local_id_mapped_on_replay(tmp_path):
    fake = FakeMlflow()
    c, _ = make(tmp_path, fake)
    fake.up = False
    rid = c.create_run("1", "trial_x", {"a": "b"})
    assert rid.startswith("local-")
    c.log_batch(rid, metrics=metric(5))
    # another process of the same run directory (a DDP rank 0 worker) logs with the local id
    other, _ = make(tmp_path, fake)
    other.spool = tmp_path / "mlflow_spool-other.jsonl"
    other.offline = True
    other._next_probe = 1e9
    other.log_batch(rid, metrics=metric(6))
    fake.up = True
    n, pending = replay_dir(tmp_path, client=fake)
    assert n == 3 and pending == []
    assert [c_[1] for c_ in fake.calls] == ["run1", "run1", "run1"]
    assert json.loads((tmp_path / "mlflow_ids.json").read_text()) == {rid: "run1"}


def test_rejected_calls_are_dropped_not_spooled(tmp_path, capsys):
    fake = FakeMlflow()
    c, _ = make(tmp_path, fake)
    fake.reject_next = True
    c.log_batch("run1", params={"p": "1"})
    assert not c.offline and not c.spool.exists()
    assert "rejected" in capsys.readouterr().err


def test_flush_waits_for_the_store_within_its_timeout(tmp_path):
    fake = FakeMlflow()
    c, _ = make(tmp_path, fake)
    fake.up = False
    c.log_batch("run1", metrics=metric(1))
    assert c.flush(timeout=3) is False  # still down: gives up after ~3 s, spool kept
    assert c.spool.exists()
    fake.up = True
    assert c.flush(timeout=3) is True and not c.spool.exists()
