from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from tti_ray.sweep.scheduler import MOASHAScheduler

M = ["val/perplexity", "val/polysemanticity/mean"]


def _result(step, ppl, poly):
    return {"step": step, M[0]: ppl, M[1]: poly}


def test_rungs_and_first_trial_continues():
    s = MOASHAScheduler(M, ["min", "min"], max_steps=1000, grace_steps=100, reduction_factor=3)
    assert s.rungs == [100, 300, 900]
    t = SimpleNamespace(trial_id="a")
    assert s.on_trial_result(None, t, _result(100, 10.0, 5.0)) == TrialScheduler.CONTINUE


def test_dominated_trial_is_stopped_and_persisted(tmp_path):
    state = tmp_path / "stopped.json"
    s = MOASHAScheduler(M, ["min", "min"], max_steps=1000, grace_steps=100,
                        reduction_factor=2, state_file=state)
    good = [SimpleNamespace(trial_id=i) for i in "ab"]
    assert s.on_trial_result(None, good[0], _result(100, 10.0, 3.0)) == TrialScheduler.CONTINUE
    # b is dominated by a; with 2 recorded and η=2 only one is kept
    assert s.on_trial_result(None, good[1], _result(100, 12.0, 4.0)) == TrialScheduler.STOP
    assert s.stopped == {"b"}
    assert MOASHAScheduler(M, ["min", "min"], 1000, state_file=state).stopped == {"b"}


def test_results_without_objectives_are_ignored():
    s = MOASHAScheduler(M, ["min", "min"], max_steps=1000, grace_steps=100, reduction_factor=2)
    t = SimpleNamespace(trial_id="x")
    assert s.on_trial_result(None, t, {"step": 100}) == TrialScheduler.CONTINUE
    assert s.recorded[100] == {}
