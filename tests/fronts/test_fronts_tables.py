"""pareto_table, pareto_json, hypervolume_report, summary_vs_baseline on hand-made trial tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tti_ray.fronts.effects import main_effects, summary_vs_baseline
from tti_ray.fronts.tables import (
    aggregate_by_config,
    finished_trials,
    hypervolume_report,
    is_multi_seed,
    pareto_json,
    pareto_table,
    searched_parameters,
)

PPL, POLY = "val/perplexity", "val/polysemanticity/mean"
COEF = "interventions.anti_poly.coef"
OBJ = f"{PPL}:min,{POLY}:min"


def single_seed_df() -> pd.DataFrame:
    rows = [
        # trial, status, coef, ppl, poly
        ("t0", "finished", 0.0, 10.0, 5.0),  # front (best ppl)
        ("t1", "finished", 0.1, 12.0, 3.0),  # front
        ("t2", "finished", 0.2, 13.0, 4.0),  # dominated by t1
        ("t3", "finished", 0.3, 15.0, 1.0),  # front
        ("t4", "diverged", 0.9, 1.0, 0.5),  # would dominate all, but diverged
        ("t5", "failed", 0.8, 2.0, 0.1),
        ("t6", "running", 0.4, np.nan, np.nan),
        ("t7", "finished", 0.5, np.nan, 0.0),  # finished but a NaN objective
        ("t8", "finished", 0.6, 12.0, 3.0),  # duplicate of t1: kept too
        ("t9", "early_stopped", 0.7, 5.0, 0.2),
    ]
    df = pd.DataFrame(rows, columns=["trial_id", "status", COEF, PPL, POLY])
    df.insert(1, "config_id", [f"c{i}" for i in range(len(df))])
    df["seed"] = 0
    df["sae/l0"] = 7.0
    df["checkpoint"] = [f"/ckpt/{t}" for t in df.trial_id]
    return df


def test_searched_parameters_and_eligible_rows():
    df = single_seed_df()
    assert searched_parameters(df) == [COEF]
    assert finished_trials(df, OBJ).trial_id.tolist() == ["t0", "t1", "t2", "t3", "t8"]
    assert not is_multi_seed(df)


def test_pareto_table_single_seed():
    df = single_seed_df()
    table = pareto_table(df, OBJ)
    assert table.trial_id.tolist() == ["t0", "t1", "t8", "t3"]  # sorted by perplexity
    assert (table["rank"] == 0).all()
    assert list(table.columns) == [*df.columns, "rank"]  # every column kept
    assert table.loc[0, "checkpoint"] == "/ckpt/t0"
    everything = pareto_table(df, OBJ, all_fronts=True)
    assert everything.set_index("trial_id")["rank"].to_dict() == {
        "t0": 0, "t1": 0, "t8": 0, "t3": 0, "t2": 1,
    }  # fmt: skip


def test_pareto_table_respects_modes():
    df = single_seed_df()
    # maximize polysemanticity: now t0 (poly 5) joins with lower perplexity, t1/t3 drop out
    table = pareto_table(df, f"{PPL}:min,{POLY}:max")
    assert table.trial_id.tolist() == ["t0"]
    table = pareto_table(df, f"{PPL}:max,{POLY}:min")
    assert table.trial_id.tolist() == ["t3"]


def multi_seed_df() -> pd.DataFrame:
    rng_vals = {
        "base": ([10.0, 10.4, 9.6], [5.0, 5.2, 4.8]),
        "mid": ([11.0, 11.5, 10.5], [3.0, 3.3, 2.7]),
        "worse": ([12.0, 12.2, 11.8], [3.5, 3.6, 3.4]),  # dominated by mid on the means
        "strong": ([14.0, 13.0, np.nan], [1.0, 1.2, np.nan]),  # third seed diverged
    }
    coefs = {"base": 0.0, "mid": 0.1, "worse": 0.05, "strong": 1.0}
    rows = []
    for cid, (ppl, poly) in rng_vals.items():
        for s in range(3):
            status = "diverged" if np.isnan(ppl[s]) else "finished"
            rows.append(
                (f"{cid}-{s}", cid, status, s, coefs[cid], ppl[s], poly[s], f"ck/{cid}/{s}")
            )
    rows.append(("pend-0", "pend", "pending", 0, 0.3, np.nan, np.nan, ""))
    cols = ["trial_id", "config_id", "status", "seed", COEF, PPL, POLY, "checkpoint"]
    return pd.DataFrame(rows, columns=cols)


def test_pareto_table_multi_seed_groups_by_config():
    df = multi_seed_df()
    assert is_multi_seed(df)
    table = pareto_table(df, OBJ)
    assert table.config_id.tolist() == ["base", "mid", "strong"]
    expected = ["config_id"]
    for m in (PPL, POLY):
        expected += [m, f"{m}_std", f"{m}_ci95"]
    assert list(table.columns) == [*expected, "n_seeds", "trial_ids", COEF, "rank"]
    mid = table.set_index("config_id").loc["mid"]
    x = np.array([11.0, 11.5, 10.5])
    assert mid[PPL] == pytest.approx(x.mean())
    assert mid[f"{PPL}_std"] == pytest.approx(x.std(ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=x.mean(), scale=stats.sem(x))
    assert mid[f"{PPL}_ci95"] == pytest.approx((hi - lo) / 2)
    assert mid["n_seeds"] == 3 and mid["trial_ids"] == ["mid-0", "mid-1", "mid-2"]
    assert mid[COEF] == 0.1
    strong = table.set_index("config_id").loc["strong"]
    assert strong["n_seeds"] == 2 and strong["trial_ids"] == ["strong-0", "strong-1"]
    assert strong[PPL] == pytest.approx(13.5)
    everything = pareto_table(df, OBJ, all_fronts=True)
    assert everything.set_index("config_id")["rank"].to_dict() == {
        "base": 0, "mid": 0, "strong": 0, "worse": 1,
    }  # fmt: skip
    # forcing single-seed mode gives trial-level rows instead
    assert "trial_id" in pareto_table(df, OBJ, multi_seed=False).columns


def test_multi_seed_with_one_finished_seed_has_nan_spread():
    df = multi_seed_df()
    df.loc[df.trial_id.isin(["mid-1", "mid-2"]), "status"] = "running"
    table = pareto_table(df, OBJ).set_index("config_id")
    assert table.loc["mid", "n_seeds"] == 1
    assert math.isnan(table.loc["mid", f"{PPL}_std"]) and math.isnan(
        table.loc["mid", f"{PPL}_ci95"]
    )


def test_empty_and_bad_tables():
    df = single_seed_df()
    df["status"] = "running"
    assert len(pareto_table(df, OBJ)) == 0
    assert "rank" in pareto_table(df, OBJ).columns
    assert len(pareto_table(multi_seed_df().assign(status="pending"), OBJ)) == 0
    with pytest.raises(ValueError, match="val/nope"):
        pareto_table(single_seed_df(), "val/nope:min")
    with pytest.raises(ValueError, match="unknown trial status"):
        pareto_table(single_seed_df().assign(status="TERMINATED"), OBJ)


def test_aggregate_by_config_keeps_method():
    df = multi_seed_df().assign(method="anti_poly")
    agg = aggregate_by_config(df[df.status == "finished"], [PPL])
    assert agg.method.unique().tolist() == ["anti_poly"]
    assert agg.config_id.tolist() == ["base", "mid", "worse", "strong"]


def test_pareto_json_is_plain_json():
    df = multi_seed_df()
    table = pareto_table(df, OBJ)
    out = pareto_json(table, OBJ, [20.0, 6.0], 12.5)
    text = json.dumps(out, allow_nan=False)  # NaN became null, numpy types unwrapped
    back = json.loads(text)
    assert back["objectives"] == [{"metric": PPL, "mode": "min"}, {"metric": POLY, "mode": "min"}]
    assert back["reference_point"] == {PPL: 20.0, POLY: 6.0}
    assert back["hypervolume"] == 12.5 and back["n_points"] == 3
    assert back["points"][0]["config_id"] == "base"
    assert back["points"][0]["trial_ids"] == ["base-0", "base-1", "base-2"]
    single = pareto_json(pareto_table(single_seed_df(), OBJ), OBJ, None, None)
    json.dumps(single, allow_nan=False)
    assert single["reference_point"] is None


def test_hypervolume_report_single_seed():
    df = single_seed_df()
    df["trial_index"] = [9, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # t0 finished last
    rep = hypervolume_report(df, OBJ, ref=[16.0, 6.0])
    # front t0 (10,5), t1 (12,3), t3 (15,1) against (16,6): strips 6*1 + 4*2 + 1*2
    assert rep["hypervolume"] == pytest.approx(6 + 8 + 2)
    assert rep["reference_point"] == {PPL: 16.0, POLY: 6.0}
    assert rep["reference_rule"].startswith("fixed")
    assert rep["n_trials"] == 10 and rep["n_finished"] == 5
    assert rep["status_counts"]["diverged"] == 1 and rep["status_counts"]["pending"] == 0
    hist = rep["history"]
    # terminal trials only (t6 is running), in trial_index order, t0 last
    assert [h["trial_id"] for h in hist] == ["t1", "t2", "t3", "t4", "t5", "t7", "t8", "t9", "t0"]
    assert [h["n_completed"] for h in hist] == list(range(1, 10))
    assert hist[0]["hypervolume"] == pytest.approx(4 * 3)  # t1 alone
    assert hist[3]["hypervolume"] == hist[2]["hypervolume"]  # diverged t4 adds nothing
    assert hist[-1]["hypervolume"] == pytest.approx(rep["hypervolume"])
    json.dumps(rep, allow_nan=False)


def test_hypervolume_report_default_reference_and_order_columns():
    df = single_seed_df()
    rep = hypervolume_report(df, OBJ)
    # finished eligible: ppl 10..15 -> 15 + 0.5; poly 1..5 -> 5 + 0.4
    assert rep["reference_point"] == pytest.approx({PPL: 15.5, POLY: 5.4})
    assert rep["reference_rule"].startswith("nadir+0.1*range")
    assert [h["trial_id"] for h in rep["history"]][:2] == ["t0", "t1"]  # row order
    df["completed_at"] = pd.to_datetime("2025-01-01") + pd.to_timedelta(np.arange(10)[::-1], "s")
    rep = hypervolume_report(df, OBJ)
    assert rep["history"][0]["trial_id"] == "t9"
    empty = hypervolume_report(df.assign(status="pending"), OBJ)
    assert empty["hypervolume"] == 0.0 and empty["reference_point"] is None
    assert empty["history"] == [] and empty["reference_rule"].startswith("none")


def test_summary_vs_baseline_matches_scipy():
    df = multi_seed_df()
    out = summary_vs_baseline(df, [PPL, POLY], "base")
    assert len(out) == 8 and list(out.columns)[-1] == COEF
    row = out[(out.config_id == "mid") & (out.metric == PPL)].iloc[0]
    ref = stats.ttest_ind([11.0, 11.5, 10.5], [10.0, 10.4, 9.6], equal_var=False)
    assert row["t"] == pytest.approx(ref.statistic)
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["dof"] == pytest.approx(ref.df)
    assert row["diff"] == pytest.approx(1.0) and row["baseline_mean"] == pytest.approx(10.0)
    assert row["n"] == 3 and row[COEF] == 0.1
    assert row["diff_pct"] == pytest.approx(10.0)  # +1.0 on a baseline mean of 10.0
    strong = out[(out.config_id == "strong") & (out.metric == POLY)].iloc[0]
    assert strong["n"] == 2  # diverged seed excluded
    base = out[(out.config_id == "base") & out.is_baseline]
    assert len(base) == 2 and base["p_value"].isna().all()
    # Holm over the three non-baseline configs of one metric
    ppl = out[(out.metric == PPL) & ~out.is_baseline]
    p = ppl.p_value.to_numpy()
    assert ppl.p_holm.min() == pytest.approx(min(1.0, 3 * p.min()))
    assert (ppl.p_holm.to_numpy() >= p - 1e-15).all()


def test_summary_vs_baseline_n1_and_errors():
    df = single_seed_df()
    out = summary_vs_baseline(df, PPL, "c0")
    assert out["t"].isna().all() and out["p_value"].isna().all()  # one seed per config
    assert out.set_index("config_id").loc["c1", "diff"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="baseline config_id 'zzz'"):
        summary_vs_baseline(df, PPL, "zzz")
    int_ids = multi_seed_df().assign(config_id=lambda d: pd.factorize(d.config_id)[0])
    assert len(summary_vs_baseline(int_ids, PPL, "0")) == 4  # ids matched as strings


def factorial_df() -> pd.DataFrame:
    """2 x 2 factorial (reg l1/l2 x act relu/gelu), 3 seeds, plus a failed trial and a constant
    parameter."""
    rng = np.random.default_rng(0)
    rows = []
    for reg in ("l1", "l2"):
        for act in ("relu", "gelu"):
            for seed in range(3):
                y = 10.0 - 2.0 * (reg == "l2") - 1.0 * (act == "gelu") + rng.normal(0, 0.5)
                rows.append({"trial_id": f"{reg}{act}{seed}", "config_id": f"{reg}-{act}",
                             "status": "finished", "seed": seed, "reg": reg, "act": act,
                             "lam": 0.1, "y": y})
    rows.append({"trial_id": "bad", "config_id": "l2-gelu", "status": "failed", "seed": 3,
                 "reg": "l2", "act": "gelu", "lam": 0.1, "y": -100.0})
    return pd.DataFrame(rows)


def test_main_effects_pool_levels_and_match_scipy():
    df = factorial_df()
    out = main_effects(df, "y", ["reg", "act", "lam"], reference={"act": "gelu"})
    assert list(out["parameter"]) == ["reg", "act"]  # lam has one level: no row
    fin = df[df.status == "finished"]
    reg = out[out.parameter == "reg"].iloc[0]
    assert (reg["level"], reg["reference_level"]) == ("l2", "l1")  # first level by default
    ref = stats.ttest_ind(fin[fin.reg == "l2"].y, fin[fin.reg == "l1"].y, equal_var=False)
    assert reg["t"] == pytest.approx(ref.statistic) and reg["p_value"] == pytest.approx(ref.pvalue)
    assert reg["n"] == 6 and reg["reference_n"] == 6  # the failed trial is not counted
    assert reg["diff_pct"] == pytest.approx(100 * reg["diff"] / abs(reg["reference_mean"]))
    act = out[out.parameter == "act"].iloc[0]
    assert (act["level"], act["reference_level"]) == ("relu", "gelu")  # reference honoured
    assert act["diff"] > 0  # relu is worse by about +1 here
    p = out["p_value"].to_numpy()
    assert out["p_holm"].to_numpy() == pytest.approx(np.minimum(1, np.maximum.accumulate(
        np.sort(p) * np.array([2, 1]))[np.argsort(np.argsort(p))]))


def test_main_effects_numeric_levels_and_missing_reference():
    df = factorial_df().assign(lam=lambda d: np.where(d.reg == "l1", 0.001, 0.01))
    out = main_effects(df, "y", ["lam"], reference={"lam": "1e-3"})  # matched as a number
    assert len(out) == 1 and out.iloc[0]["level"] == 0.01
    assert main_effects(df, "y", ["lam"], reference={"lam": 5.0}).empty  # level not present
