"""benchmarks/sweep_efficiency.py's replay: the product's searchers and MO-ASHA scheduler run
against a table of learning curves (a synthetic one here, with the real table's axes)."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from benchmarks.sweep_efficiency import (
    LAM,
    OBJ,
    PROBLEMS,
    SPACES,
    K,
    curves,
    first_reach,
    hv_at_steps,
    make_table,
    run_benchmark,
    simulate,
)
from tti_ray.sweep.space import load_search_space


def synthetic_table():
    """7 × 7 cells on the real table's axes: smaller k lowers polysemanticity and costs
    perplexity; λ helps both a little; curves fall with steps. One cell diverges."""
    space = load_search_space(SPACES / "efficiency_table.yaml")
    ks = space.parameters[K].values
    lams = space.parameters[LAM].values
    rows = []
    for k in ks:
        for lam in lams:
            for step in (50, 100, 150, 200):
                ppl = (100 + 80 * (1 - k) ** 2 - 5 * np.log10(lam)) * (1 + 100 / step)
                poly = (0.5 + 4 * k) * (1 - 0.05 * (np.log10(lam) + 4)) + 0.5 * (1 - step / 200)
                if k == ks[0] and lam == lams[-1] and step == 200:
                    ppl = float("nan")  # diverged cell
                rows.append({K: k, LAM: lam, "step": step, OBJ[0]: ppl, OBJ[1]: poly})
    return make_table(pd.DataFrame(rows))


def _space(file: str, *sets: str):
    return load_search_space(SPACES / file, list(sets))


def test_grid_replay_visits_the_4x4_subgrid(tmp_path):
    table = synthetic_table()
    ended = simulate(_space("efficiency.yaml"), table, 16, db=tmp_path / "g.db")
    cells = {(e[K], e[LAM]) for e in ended}
    grid = _space("efficiency.yaml").parameters
    assert cells == {(k, lam) for k in grid[K].values for lam in grid[LAM].values}
    assert {e["status"] for e in ended} == {"finished", "diverged"}
    assert all(e["steps"] == 200 for e in ended)
    ends = [e["ended_at"] for e in ended]
    assert ends == sorted(ends) and ends[-1] == 16 * 200 / 2  # 2 at a time, no idle slot


def test_mo_asha_replay_stops_trials_and_prunes_them_in_optuna(tmp_path):
    table = synthetic_table()
    space = _space("efficiency_continuous.yaml", "searcher.type=tpe",
                   "scheduler={type: mo_asha, grace_steps: 50, reduction_factor: 3}")
    ended = simulate(space, table, 24, db=tmp_path / "a.db")
    assert len(ended) == 24
    stopped = [e for e in ended if e["status"] == "early_stopped"]
    assert stopped and all(e["steps"] in (50, 150) for e in stopped)  # rungs 50 and 150
    study = optuna.load_study(study_name=space.name, storage=f"sqlite:///{tmp_path / 'a.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") == len(stopped)
    assert states.count("COMPLETE") == sum(e["status"] == "finished" for e in ended)
    ref = np.array([1e4, 10.0])
    c = curves(ended, table, ref)
    assert np.all(np.diff(c["hypervolume"]) >= 0) and c["steps"][-1] == sum(
        e["steps"] for e in ended)
    # early-stopped trials add compute but never hypervolume
    for i, e in enumerate(ended[1:], start=1):
        if e["status"] != "finished":
            assert c["hypervolume"][i] == c["hypervolume"][i - 1]


def test_curve_helpers():
    c = {"hypervolume": [0.0, 1.0, 3.0, 3.0], "steps": [50, 250, 450, 500]}
    assert hv_at_steps(c, 40) == 0.0 and hv_at_steps(c, 449) == 1.0 and hv_at_steps(c, 1e9) == 3.0
    assert first_reach(c, 3.0) == (3, 450) and first_reach(c, 3.5) == (None, None)


def test_run_benchmark_reports_both_targets(tmp_path):
    res = run_benchmark(synthetic_table(), reps=2, budget=16, work=tmp_path)
    assert set(res["searchers"]) == {"grid", "random", "tpe", "nsga2", "gp", "tpe+mo_asha",
                                    "tpe+mo_asha(eta=2)"}
    assert res["grid_compute_steps"] == 16 * 200
    assert len(res["targets"]) == 2 and all(isinstance(v, bool) for v in res["targets"].values())
    grid = res["summary"]["grid"]
    assert grid["hv_over_grid_at_full_grid_compute"]["median"] == pytest.approx(1.0)
    assert grid["compute_fraction_to_reach_grid_hv"]["median"] <= 1.0
    # context: the best single cell's hypervolume is a rectangle up to the reference point
    ref = np.array([res["reference_point"][m] for m in OBJ])
    table = synthetic_table()
    finals = [np.array([c[-1][m] for m in OBJ]) for c in table.curves.values()]
    rect = max(float(np.prod(ref - f)) for f in finals if np.all(np.isfinite(f)))
    best = res["context"]["best_cells_hv_over_grid"]
    assert best["1"]["hv_over_grid"] * res["grid_final_hypervolume"] == pytest.approx(rect)
    assert best["1"]["hv_over_grid"] <= best["2"]["hv_over_grid"] <= best["3"]["hv_over_grid"]
    assert [len(best[n]["cells"]) for n in "123"] == [1, 2, 3]
    half = res["context"]["sweeps_configured_for_8_trials_hv_over_grid"]
    assert set(half) == {"tpe", "gp"} and all(0 < h["median"] for h in half.values())


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_problem_spaces_are_consistent(name):
    """Each problem's grid is every other value of its 7 × 7 table, the continuous box spans the
    table exactly (λ on a log scale), and all three spaces share one run config."""
    pr = PROBLEMS[name]
    table, grid, box = (load_search_space(f) for f in
                        (pr.table_space, pr.grid_space, pr.continuous_space))
    for p in (K, LAM):
        vals = table.parameters[p].values
        assert len(vals) == 7 and grid.parameters[p].values == vals[::2]
        lo, hi = box.parameters[p].low, box.parameters[p].high
        assert (lo, hi) == pytest.approx((vals[0], vals[-1]), rel=1e-3)
        spacing = np.diff(np.log10(vals) if p == LAM else vals)
        assert spacing == pytest.approx(np.full(6, spacing.mean()), rel=0.02)
    assert box.parameters[LAM].distribution == "loguniform"
    assert box.parameters[K].distribution == "uniform"
    assert grid.budget.trials == 16 and table.budget.trials == 49
    assert [o.metric for o in box.objectives] == list(pr.objectives)
    assert [(c.metric, c.max) for c in box.constraints] == ([pr.constraint] if pr.constraint else [])

    def run(s):  # the run config, less when it evaluates and checkpoints
        train = {k: v for k, v in s.base["train"].items() if k not in ("eval_every", "ckpt_every")}
        return {**s.base, "train": train}

    assert run(table) == run(grid) == run(box) and run(box)["train"]["steps"] == 200


def test_calibrated_problem_applies_the_constraint(tmp_path):
    """The calibrated 2-D problem: its own objectives, the dead-fraction bound applied to every
    searcher's trials, random search run without constraints (it cannot use them)."""
    pr = PROBLEMS["topk_anti_poly_calibrated"]
    space = load_search_space(pr.table_space)
    rows = []
    for k in space.parameters[K].values:
        for lam in space.parameters[LAM].values:
            for step in (50, 100, 150, 200):
                rows.append({K: k, LAM: lam, "step": step,
                             pr.objectives[0]: (100 + 80 * (1 - k) ** 2) * (1 + 100 / step),
                             pr.objectives[1]: 0.3 + 0.6 * k - 0.02 * np.log10(lam),
                             pr.constraint[0]: 0.4 if k < 0.1 else 0.0})  # k = 0.05: half dead
    table = make_table(pd.DataFrame(rows), pr)
    assert table.objectives == pr.objectives and table.constraint == pr.constraint
    res = run_benchmark(table, reps=1, budget=16, work=tmp_path, problem=pr)
    assert set(res["searchers"]) >= {"grid", "random", "tpe"}
    assert res["constraint"] == "val/dead_fraction/mean <= 0.1"
    ref = np.array([res["reference_point"][m] for m in pr.objectives])
    feasible = table.finals()
    assert len(feasible) == 42 and np.all(ref > feasible.max(0))  # the k = 0.05 row never counts
    grid_cells = [k for k in load_search_space(pr.grid_space).parameters[K].values]
    assert 0.05 in grid_cells  # the grid spends 4 of its 16 trials on infeasible cells
    assert res["grid_final_hypervolume"] > 0


def _fake_table_sweep(exp, space, skip=0):
    """A table sweep's outputs as the product writes them (``trials.csv`` and each trial's
    ``metrics.jsonl``), every cell but the last ``skip`` measured."""
    import json

    cells = [(k, lam) for k in space.parameters[K].values for lam in space.parameters[LAM].values]
    cells = cells[:len(cells) - skip]
    rows = []
    for i, (k, lam) in enumerate(cells):
        run = exp / "runs" / f"t{i:03d}"
        run.mkdir(parents=True)
        recs = [{"step": s, "train/loss": 1.0} for s in (25, 75)]  # train rows: no eval metrics
        recs += [{"step": s, "val/perplexity": 100 + i + s, "val/polysemanticity/mean": 0.9,
                  "val/polysemanticity_calibrated/mean": k, "val/dead_fraction/mean": 0.5 if k < 0.1 else 0.0,
                  "val/polysemanticity_live/mean": 0.5, "val/monosemantic_fraction/mean": 0.1,
                  "val/effective_dim/mean": 3.0, "val/sparsity/mlp_hidden/layer_0": 0.2}
                 for s in (50, 100, 150, 200)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
        rows.append({"trial_id": f"t{i:03d}", K: k, LAM: lam, "status": "finished"})
    pd.DataFrame(rows).to_csv(exp / "trials.csv", index=False)


def test_table_keeps_every_reported_metric_and_refuses_a_partial_sweep(tmp_path):
    """The calibrated table holds the objectives, the constraint's metric and every metric its
    table space reports (``report_metrics``), one row per cell and eval step; a sweep that has
    not measured every cell writes nothing."""
    from benchmarks.sweep_efficiency import write_table

    pr = PROBLEMS["topk_anti_poly_calibrated"]
    space = load_search_space(pr.table_space)
    full, part = tmp_path / "full", tmp_path / "part"
    _fake_table_sweep(full, space)
    _fake_table_sweep(part, space, skip=1)
    out = tmp_path / "table.csv"
    with pytest.raises(SystemExit, match="48 of 49 cells"):
        write_table(part, pr, out)
    assert not out.exists()
    df = write_table(full, pr, out)
    want = {*pr.objectives, pr.constraint[0], *space.report_metrics}
    assert want <= set(df.columns) and "val/sparsity/mlp_hidden/layer_0" not in df.columns
    assert len(df) == 49 * 4 and sorted(df["step"].unique()) == [50, 100, 150, 200]
    back = pd.read_csv(out)
    assert back[pr.objectives[1]].tolist() == df[K].tolist()  # each cell's own curve
    assert make_table(back, pr).finals().shape == (42, 2)  # the k = 0.05 row is dead


def test_build_table_continues_an_interrupted_sweep(tmp_path, monkeypatch):
    """--build-table runs the product's sweep command into a persistent directory and passes
    ``--resume`` when that directory holds an interrupted sweep."""
    import benchmarks.sweep_efficiency as se

    pr = PROBLEMS["topk_anti_poly_calibrated"]
    assert se.sweep_dir(pr) == se.DATA / "topk_anti_poly_calibrated_sweep"
    assert se.sweep_dir(pr, tmp_path) == tmp_path / "topk_anti_poly_calibrated_table"
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(se.subprocess, "run", lambda args, **kw: calls.append(args) or Done())
    exp = tmp_path / "exp"
    _fake_table_sweep(exp, load_search_space(pr.table_space))
    se.build_table(exp, pr, tmp_path / "t.csv")
    assert calls[0][1:4] == ["-m", "tti_ray.sweep", str(pr.table_space)]
    assert "--resume" in calls[0]
    with pytest.raises(SystemExit, match="no table sweep"):  # fresh: no --resume
        (tmp_path / "fresh").mkdir()
        se.build_table(tmp_path / "fresh", pr, tmp_path / "u.csv")
    assert "--resume" not in calls[1]
