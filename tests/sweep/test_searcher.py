"""Unit tests of the Optuna searcher wrappers (pure logic; no Ray cluster)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tti_ray.sweep.searcher import SEED_KEY, SeedGroups, make_searcher
from tti_ray.sweep.space import load_search_space

from .conftest import write_space


def _searcher(tmp_path, **over):
    space = load_search_space(write_space(tmp_path / "s.yaml", **over))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return space, make_searcher(space, url), url


def _states(url, name="test_sweep"):
    return [t.state for t in optuna.load_study(study_name=name, storage=url).trials]


def test_only_finished_trials_are_complete(tmp_path):
    space, s, url = _searcher(tmp_path, budget={"trials": 4})
    for i in range(4):
        assert "interventions.anti_poly.coef" in s.suggest(f"t{i}")
    ok = {"status": "finished", "val/perplexity": 30.0, "val/polysemanticity/mean": 4.0}
    s.on_trial_complete("t0", ok)
    s.on_trial_complete("t1", {**ok, "status": "running"})  # early-stopped at a rung
    s.on_trial_complete("t2", {"status": "diverged", "val/perplexity": float("inf")})
    s.on_trial_complete("t3", None, error=True)
    s.on_trial_complete("t0", ok)  # told twice: ignored
    assert _states(url) == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                            TrialState.FAIL]
    study = optuna.load_study(study_name="test_sweep", storage=url)
    assert study.trials[0].values == [30.0, 4.0]


def test_study_survives_in_storage(tmp_path):
    space, s, url = _searcher(tmp_path)
    s.suggest("a")
    s.on_trial_complete("a", {"status": "finished", "val/perplexity": 1.0,
                              "val/polysemanticity/mean": 2.0})
    # a second searcher on the same storage (a restarted driver) sees the same study
    _, s2, _ = _searcher(tmp_path)
    s2.suggest("b")
    assert len(optuna.load_study(study_name="test_sweep", storage=url).trials) == 2


def test_seed_groups_tell_the_seed_mean(tmp_path):
    space, s, url = _searcher(tmp_path, budget={"trials": 2, "seeds_per_config": 3})
    assert isinstance(s, SeedGroups)
    cfgs = [s.suggest(f"t{i}") for i in range(3)]
    assert [c[SEED_KEY] for c in cfgs] == [0, 1, 2]
    key = "interventions.anti_poly.coef"
    assert len({c[key] for c in cfgs}) == 1  # one configuration, three seeds
    nxt = s.suggest("t3")
    assert nxt[SEED_KEY] == 0 and nxt[key] != cfgs[0][key]
    for i, (p, q) in enumerate([(10.0, 1.0), (20.0, 2.0), (30.0, 3.0)]):
        s.on_trial_complete(f"t{i}", {"status": "finished", "val/perplexity": p,
                                      "val/polysemanticity/mean": q})
    study = optuna.load_study(study_name="test_sweep", storage=url)
    assert study.trials[0].state == TrialState.COMPLETE
    assert study.trials[0].values == [20.0, 2.0]


def test_seed_group_with_a_failed_seed_is_not_complete(tmp_path):
    _, s, url = _searcher(tmp_path, budget={"trials": 1, "seeds_per_config": 2})
    s.suggest("a")
    s.suggest("b")
    s.on_trial_complete("a", {"status": "finished", "val/perplexity": 1.0,
                              "val/polysemanticity/mean": 1.0})
    s.on_trial_complete("b", {"status": "diverged"})
    assert _states(url) == [TrialState.FAIL]


def test_seed_groups_survive_tunes_searcher_checkpoint(tmp_path):
    """Tune saves a wrapping searcher through get_state/set_state (a sweep with several seeds
    per configuration used to crash at its first experiment checkpoint)."""
    from ray.tune.search import SearchGenerator

    _, s, url = _searcher(tmp_path, budget={"trials": 2, "seeds_per_config": 3})
    gen = SearchGenerator(s)
    first = s.suggest("a")
    s.suggest("b")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    gen.save_to_dir(str(ckpt), session_str="x")

    _, s2, _ = _searcher(tmp_path, budget={"trials": 2, "seeds_per_config": 3})
    SearchGenerator(s2).restore_from_dir(str(ckpt))
    assert s2.open == ["a"] and s2.member_of == {"a": "a", "b": "a"}
    third = s2.suggest("c")  # the third seed of the same configuration
    assert third == {**{k: v for k, v in first.items() if k != SEED_KEY}, SEED_KEY: 2}
