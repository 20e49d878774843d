"""benchmarks/joint_search.py and its peers' adapters (benchmarks/peers.py), on a synthetic 4-D
table with the real table's axes: the product's searchers and scheduler, plain Optuna, Syne Tune's
MOASHA and MOREA through its simulator, and Ray Tune itself."""

from __future__ import annotations

import itertools
import math

import numpy as np
import optuna
import pandas as pd
import pytest

from benchmarks.joint_search import (
    CONTENDERS,
    DEAD,
    KNOBS,
    OBJ,
    SEARCH_SPACE,
    SPACES,
    TABLE_SPACE,
    cell_name,
    concurrency_effect,
    run_benchmark,
    run_contender,
)
from benchmarks.peers import _blackbox_class, config_space, optuna_replay, syne_tune_replay
from benchmarks.replay import Table, curves, ray_tune_replay
from tti_ray.fronts.dominance import dominates
from tti_ray.fronts.hypervolume import hypervolume
from tti_ray.sweep.space import load_search_space

P = list(KNOBS)
SUPER = (0.5, 1e-2, 0.0, 1e-3)  # a combination made to dominate every single-method cell
DIVERGED = (0.25, 0.1, 1e-3, 0.1)


def synthetic_table() -> Table:
    """Smaller k lowers polysemanticity and costs perplexity, anti-poly and L1 help
    polysemanticity and cost perplexity, orthogonality costs a little; curves fall with steps.
    k = 0.1 kills half the neurons (infeasible); one cell diverges; one is made to dominate."""
    space = load_search_space(TABLE_SPACE)
    rows = []
    for cell in itertools.product(*(space.parameters[p].values for p in P)):
        k, a, l1, o = cell
        for step in (50, 100, 150, 200):
            f = 1 + 100 / step
            ppl = (100 + 60 * (1 - k) ** 2 + 200 * a + 1000 * l1 + 10 * o) * f
            poly = (0.4 + 0.5 * k) * (1 - 2 * a) * (1 - 20 * l1) + 0.1 * (1 - step / 200)
            if cell == SUPER:
                ppl, poly = 50 * f, 0.1 + 0.1 * (1 - step / 200)
            if cell == DIVERGED and step == 200:
                ppl = math.nan
            rows.append({**dict(zip(P, cell)), "step": step, OBJ[0]: ppl, OBJ[1]: poly,
                         DEAD[0]: 0.5 * (k == 0.1) + 5 * l1})
    return Table(pd.DataFrame(rows), tuple(P), OBJ, ("min", "min"), DEAD)


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


def test_table_counts_and_snaps(table):
    assert len(table.curves) == 256 and table.max_steps == 200
    assert table.final_status(DIVERGED) == "diverged" and not table.counts(DIVERGED)
    assert not table.counts((0.1, 0.0, 0.0, 0.0))  # half dead
    assert table.counts((1.0, 0.0, 0.0, 0.0))
    assert table.cell_of({P[0]: 0.27, P[1]: 0.011, P[2]: 0.0, P[3]: 0.2}) == (0.25, 0.01, 0.0, 0.1)
    ref = table.reference_point()
    feas = table.finals()
    assert len(feas) == 256 - 64 - 1  # k = 0.1 and the diverged cell never count
    assert np.all(ref > feas.max(0))


def test_problem_spaces_share_the_table(table):
    """The grids and the search space are sub-spaces of the table: same run config, same
    levels, and the one-at-a-time grid is the baseline plus every single-method cell."""
    t = load_search_space(TABLE_SPACE)
    oat = load_search_space(SPACES / "joint4_one_at_a_time.yaml").grid_points()
    fact = load_search_space(SPACES / "joint4_factorial.yaml").grid_points()
    search = load_search_space(SEARCH_SPACE)
    for s in (search, load_search_space(SPACES / "joint4_factorial.yaml")):
        assert s.base == t.base
    assert {p: v.values for p, v in search.parameters.items()} == {
        p: v.values for p, v in t.parameters.items()}
    assert [c.metric for c in search.constraints] == [DEAD[0]]
    assert search.constraints[0].max == DEAD[1]
    singles = {c for c in table.curves
               if sum(v != KNOBS[p][1] for p, v in zip(P, c)) <= 1}
    assert {tuple(float(pt[p]) for p in P) for pt in oat} == singles and len(oat) == 13
    middle = {p: t.parameters[p].values[2] for p in P}  # off, then the seed's 3 strengths
    assert len(fact) == 16 and all(pt[p] in (KNOBS[p][1], middle[p]) for pt in fact for p in P)
    assert len({tuple(pt[p] for p in P) for pt in fact}) == 16


def test_benchmark_runs_every_contender(table, tmp_path):
    res = run_benchmark(table, reps=2, work=tmp_path)
    assert set(res["contenders"]) == set(CONTENDERS) and res["budget"] == 13
    c = res["contenders"]
    # the bar: the one-at-a-time grid's 13 cells, whatever the seed
    oat_cells = [cl for cl in table.curves if sum(v != KNOBS[p][1] for p, v in zip(P, cl)) <= 1]
    pts = np.array([[table.curves[cl][-1][m] for m in OBJ] for cl in oat_cells
                    if table.counts(cl)])
    ref = np.array([res["reference_point"][m] for m in OBJ])
    assert res["bar"]["hypervolume"] == pytest.approx(hypervolume(pts, ["min", "min"], ref))
    assert res["bar"]["steps"] == 13 * 200 and res["bar"]["trials"] == 13
    for name in ("one_at_a_time", "factorial", "tpe", "optuna:tpe", "syne_tune:morea"):
        assert "early_stopped" not in c[name]["status_counts"]
    for name in ("tpe+mo_asha", "syne_tune:moasha"):  # 3 x the budget started, most stopped
        assert c[name]["status_counts"]["early_stopped"] > 0
        assert all(len(r["steps"]) == 39 for r in c[name]["runs"])
    for name in ("tpe", "optuna:gp", "syne_tune:morea", "random"):
        assert all(len(r["hypervolume"]) == 13 for r in c[name]["runs"])
    assert all(len(r["hypervolume"]) == 16 for r in c["factorial"]["runs"])
    s = res["summary"]
    assert s["one_at_a_time"]["hv_over_bar_at_bar_steps"]["median"] == pytest.approx(1.0)
    assert s["one_at_a_time"]["trials_to_reach_bar"]["median"] <= 13
    assert set(res["targets"]) and all(isinstance(t["met"], bool)
                                       for t in res["targets"].values())
    fewest = res["ranking"]["fewest_trials_to_reach_bar (median)"]
    assert sorted(n for n, _ in fewest) == sorted(CONTENDERS)
    reached = [v for _, v in fewest if v is not None]
    assert reached == sorted(reached) and all(v is None for _, v in fewest[len(reached):])
    land = res["landscape"]
    assert land["combinations_dominating_every_single_method_config"] == [
        cell_name(table, SUPER)] == ["topk=0.5 + anti_poly=0.01 + orth=0.001"]
    assert land["not_finished"] == [cell_name(table, DIVERGED)]
    front = [f["cell"] for f in land["front"]]
    assert front[0] == cell_name(table, SUPER) and land["front_hv_over_one_at_a_time"] > 1


def test_grids_visit_their_cells(table, tmp_path):
    oat = run_contender("one_at_a_time", table, 0, 13, tmp_path)
    assert len({tuple(e[p] for p in P) for e in oat}) == 13
    fact = run_contender("factorial", table, 3, 13, tmp_path)
    cells = {tuple(e[p] for p in P) for e in fact}
    assert len(cells) == 16 and {c[0] for c in cells} == {1.0, 0.25}


def test_plain_optuna_tells_constraints(table, tmp_path):
    space = load_search_space(SEARCH_SPACE, ["budget.trials=13", "searcher.seed=1"])
    url = f"sqlite:///{tmp_path / 'o.db'}"
    ended = optuna_replay(space, table, 13, storage=url)
    study = optuna.load_study(study_name=space.name, storage=url)
    assert len(study.trials) == len(ended) == 13
    for t, e in zip(study.trials, ended):
        (name, c), = t.constraints.items()  # Trial.set_constraint, as the product's searcher
        assert name == space.constraints[0].describe()
        assert (c <= 0) == (e[DEAD[0]] <= DEAD[1])
        cell = table.cell_of(t.params)
        assert cell == tuple(e[p] for p in P)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.values == [table.curves[cell][-1][m] for m in OBJ]
        else:
            assert e["status"] != "finished"
    assert [e["ended_at"] for e in ended] == [200 * (i + 1) for i in range(13)]  # one at a time


def test_product_one_at_a_time_is_plain_optuna(table, tmp_path):
    """At concurrency 1 the product's searcher (Ray's OptunaSearch wrapper, SQLite, status-aware
    tells) proposes exactly the cells plain Optuna's study.optimize does, seed for seed: the two
    paths differ only by concurrency."""
    res = concurrency_effect(table, 2, tmp_path, kinds=("tpe",))
    r = res["tpe"]
    assert r["reps_where_concurrency_1_proposes_plain_optunas_cells"] == 2
    assert r["product_concurrency_1_hv_over_bar_median"] == pytest.approx(
        r["plain_optuna_hv_over_bar_median"])
    assert res["budget"] == 13


def test_syne_tune_blackbox_is_the_table(table):
    space = load_search_space(SEARCH_SPACE)
    bb = _blackbox_class()(table, config_space(space))
    cfg = dict(zip(P, DIVERGED))
    a = bb.objective_function(cfg)
    assert a.shape == (4, len(table.metrics) + 1)
    assert list(a[:, -1]) == [50, 100, 150, 200] == list(bb.fidelity_values)
    assert a[-1, 0] == math.inf  # NaN perplexity: the worst, for Syne Tune's sorts
    assert bb.objective_function(cfg, fidelity=100)[OBJ[1]] == table.curves[DIVERGED][1][OBJ[1]]


@pytest.mark.parametrize("kind", ["moasha", "morea"])
def test_syne_tune_replay(table, tmp_path, kind):
    space = load_search_space(SEARCH_SPACE)
    ended = syne_tune_replay(kind, space, table, 20, seed=2, work=tmp_path)
    assert len(ended) == 20 == len({e["trial_id"] for e in ended})
    stopped = [e for e in ended if e["status"] == "early_stopped"]
    if kind == "moasha":
        assert stopped and {e["steps"] for e in stopped} <= {50, 150}  # rungs at 50 and 150
    else:
        assert not stopped and all(e["steps"] == 200 for e in ended)
    assert [e["ended_at"] for e in ended] == sorted(e["ended_at"] for e in ended)
    for e in ended:
        cell = tuple(e[p] for p in P)
        assert e["counts"] == (e["status"] == "finished" and table.counts(cell))
    # seeded: the same seed gives the same trials
    again = syne_tune_replay(kind, space, table, 20, seed=2, work=tmp_path / "again")
    assert [tuple(e[p] for p in P) for e in again] == [tuple(e[p] for p in P) for e in ended]


def test_ray_tune_replay_matches_the_simulation_rule(table, tmp_path):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        space = load_search_space(SEARCH_SPACE, [
            "budget.trials=8", "scheduler={type: mo_asha, grace_steps: 50, reduction_factor: 3}"])
        ended = ray_tune_replay(space, table, 8, storage=tmp_path / "rt")
    finally:
        ray.shutdown()
    assert len(ended) == 8
    for e in ended:
        cell = tuple(e[p] for p in P)
        assert e[OBJ[0]] == next(pt[OBJ[0]] for pt in table.curves[cell] if pt["step"] == e["steps"])
        assert (e["status"] == "early_stopped") == (e["steps"] < 200)
    c = curves(ended, table, table.reference_point())
    assert np.all(np.diff(c["hypervolume"]) >= 0)


def test_dominance_helper_agrees_with_front(table, tmp_path):
    res = run_benchmark(table, reps=1, work=tmp_path, names=["one_at_a_time", "tpe"])
    front = res["landscape"]["front"]
    pts = [np.array([f[m] for m in OBJ]) for f in front]
    for i, a in enumerate(pts):
        assert not any(dominates(b, a, ["min", "min"]) for j, b in enumerate(pts) if j != i)
    assert "targets" not in res  # needs tpe+mo_asha and Syne Tune's MOASHA
