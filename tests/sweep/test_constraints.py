"""Constraints: Optuna-convention values, the feasible column, load-time validation, and what
the searcher tells Optuna (real Optuna study; no Ray cluster)."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from tti_ray.config import ConfigError
from tti_ray.sweep.constraints import constraint_values, feasible_column
from tti_ray.sweep.searcher import SEED_KEY, make_searcher
from tti_ray.sweep.space import Constraint, config_id, load_search_space

from .conftest import write_space

PPL, DEAD = "val/perplexity", "val/dead_fraction/mean"
K = "interventions.topk.k"


def _c(**kw) -> Constraint:
    return Constraint(**kw)


def test_constraint_values_follow_optuna_convention():
    cons = [_c(metric=DEAD, max=0.2), _c(metric=PPL, max_ratio_to_baseline=1.1),
            _c(metric="val/monosemantic_fraction/mean", min=0.3)]
    m = {DEAD: 0.5, PPL: 105.0, "val/monosemantic_fraction/mean": 0.4}
    assert constraint_values(cons, m, {PPL: 100.0}) == pytest.approx([0.3, -5.0, -0.1])
    assert constraint_values(cons, m, None) is None  # baseline not ended: undecidable
    # baseline ended unfinished, or a metric missing / NaN: infeasible
    assert constraint_values(cons, m, {})[1] == math.inf
    assert constraint_values(cons, {**m, DEAD: float("nan")}, {PPL: 1.0})[0] == math.inf
    assert constraint_values([_c(metric=PPL, min_ratio_to_baseline=0.5)], {PPL: 40.0},
                             {PPL: 100.0}) == pytest.approx([10.0])


def test_exactly_one_bound():
    with pytest.raises(ValueError, match="exactly one"):
        _c(metric=PPL, max=1.0, min=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        _c(metric=PPL)


def _df(rows):
    return pd.DataFrame(rows)


def test_feasible_column_waits_for_the_baseline():
    base = {K: 1.0}
    bid = config_id(base)
    cons = [_c(metric=PPL, max_ratio_to_baseline=1.1), _c(metric=DEAD, max=0.2)]
    rows = [
        {"trial_id": "a", "config_id": "x", "status": "finished", PPL: 105.0, DEAD: 0.1},
        {"trial_id": "b", "config_id": "y", "status": "finished", PPL: 120.0, DEAD: 0.1},
        {"trial_id": "c", "config_id": "z", "status": "finished", PPL: 100.0, DEAD: 0.5},
        {"trial_id": "d", "config_id": "w", "status": "pending", PPL: None, DEAD: None},
        {"trial_id": "e", "config_id": bid, "status": "running", PPL: 100.0, DEAD: 0.0},
    ]
    assert feasible_column(_df(rows), cons, bid) == [None, None, None, None, None]
    rows[-1]["status"] = "finished"
    assert feasible_column(_df(rows), cons, bid) == [True, False, False, None, True]
    assert feasible_column(_df(rows), [], bid) == [True, True, True, None, True]


def test_load_time_validation(tmp_path):
    def load(**over):
        return load_search_space(write_space(tmp_path / "s.yaml", **over))

    space = load(constraints=[{"metric": "val/polysemanticity_calibrated/mean", "max": 0.9}])
    assert space.constraints[0].upper
    with pytest.raises(ConfigError, match=r"constraints\[0\]\.metric: no trial reports"):
        load(constraints=[{"metric": "val/nope/mean", "max": 1}])
    with pytest.raises(ConfigError, match="needs a 'baseline'"):
        load(constraints=[{"metric": PPL, "max_ratio_to_baseline": 1.1}])
    with pytest.raises(ConfigError, match="searcher 'random' cannot use them"):
        load(constraints=[{"metric": PPL, "max": 100}], searcher={"type": "random"})


def _study(url, name="test_sweep"):
    return optuna.load_study(study_name=name, storage=url)


def test_searcher_holds_trials_until_the_baseline_and_stores_constraint_values(tmp_path):
    base = {"interventions.anti_poly.coef": 1e-4}
    space = load_search_space(write_space(
        tmp_path / "s.yaml", budget={"trials": 4}, baseline=base,
        constraints=[{"metric": PPL, "max_ratio_to_baseline": 1.1}, {"metric": DEAD, "max": 0.2}]))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = make_searcher(space, url)
    first = s.suggest("t0")
    assert first["interventions.anti_poly.coef"] == 1e-4  # the baseline runs first
    s.suggest("t1")
    s.suggest("t2")
    res = {"status": "finished", "val/polysemanticity/mean": 3.0}
    s.on_trial_complete("t1", {**res, PPL: 120.0, DEAD: 0.1})  # before the baseline: held
    assert _study(url).trials[1].state == optuna.trial.TrialState.RUNNING
    s.on_trial_complete("t0", {**res, PPL: 100.0, DEAD: 0.0})
    s.on_trial_complete("t2", {**res, PPL: 105.0, DEAD: 0.5})
    trials = _study(url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    # Optuna's own record, which its TPE/NSGA-II/GP samplers read
    r, d = "val/perplexity <= 1.1 x baseline", "val/dead_fraction/mean <= 0.2"
    assert [t.constraints for t in trials] == [
        pytest.approx({r: -10.0, d: -0.2}), pytest.approx({r: 10.0, d: -0.1}),
        pytest.approx({r: -5.0, d: 0.3})]


def test_seed_groups_use_their_worst_seed(tmp_path):
    space = load_search_space(write_space(
        tmp_path / "s.yaml", budget={"trials": 1, "seeds_per_config": 2},
        constraints=[{"metric": DEAD, "max": 0.2}]))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = make_searcher(space, url)
    assert s.suggest("a")[SEED_KEY] == 0 and s.suggest("b")[SEED_KEY] == 1
    res = {"status": "finished", PPL: 50.0, "val/polysemanticity/mean": 3.0}
    s.on_trial_complete("a", {**res, DEAD: 0.1})
    s.on_trial_complete("b", {**res, DEAD: 0.3})
    (t,) = _study(url).trials
    assert list(t.constraints.values()) == pytest.approx([0.1])  # the seed with dead 0.3


def test_study_names_its_objectives_and_links_trials(tmp_path):
    from tti_ray.sweep.searcher import ATTR, OPTUNA_KEY

    space = load_search_space(write_space(tmp_path / "s.yaml", budget={"trials": 2,
                                                                        "seeds_per_config": 2}))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = make_searcher(space, url, exp_dir=str(tmp_path), runs_dir=str(tmp_path / "runs"))
    a, b = s.suggest("a"), s.suggest("b")
    assert a[OPTUNA_KEY] == b[OPTUNA_KEY] == 0  # two seeds of one Optuna trial
    res = {"status": "finished", PPL: 50.0, "val/polysemanticity/mean": 3.0}
    s.on_trial_complete("a", {**res, "mlflow_run_id": "r1"})
    s.on_trial_complete("b", {**res, "mlflow_run_id": "r2"})
    study = _study(url)
    assert study.metric_names == [PPL, "val/polysemanticity/mean"]
    assert study.user_attrs[f"{ATTR}experiment_dir"] == str(tmp_path)
    assert len(study.user_attrs[f"{ATTR}search_space_sha256"]) == 64
    (t,) = study.trials
    params = {k: a[k] for k in space.parameters}
    assert t.user_attrs[f"{ATTR}trial_ids"] == ["a", "b"]
    assert t.user_attrs[f"{ATTR}config_id"] == config_id(params)
    assert t.user_attrs[f"{ATTR}run_dirs"] == [str(tmp_path / "runs" / x) for x in "ab"]
    assert t.user_attrs[f"{ATTR}mlflow_run_ids"] == ["r1", "r2"]
    assert t.user_attrs[f"{ATTR}status"] == "finished"


def test_a_fresh_sweep_never_joins_an_existing_study(tmp_path):
    from tti_ray.cli import UsageError
    from tti_ray.sweep.searcher import check_new_study

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    check_new_study(url, "test_sweep")  # no file yet: nothing to join, nothing created
    assert not (tmp_path / "shared.db").exists()
    space = load_search_space(write_space(tmp_path / "s.yaml"))
    make_searcher(space, url)
    check_new_study(url, "other_name")
    with pytest.raises(UsageError, match="already holds a study named 'test_sweep'"):
        check_new_study(url, "test_sweep")
