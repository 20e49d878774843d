"""A multi-seed toy sweep through real Ray Tune: every seed of every configuration finishes (the
seed-group searcher survives Tune's experiment checkpoints) and summary.csv carries the Welch
tests against the baseline configuration."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.sweep.conftest import run_sweep_cli, write_space

pytestmark = pytest.mark.slow


def test_seeded_toy_ablation_sweep_writes_welch_summary(tmp_path):
    space = write_space(
        tmp_path / "space.yaml", name="toy_seeds",
        base={"workload": "toy_ablation", "toy": {"kind": "ablation", "steps": 300,
                                                  "sae_steps": 100}},
        parameters={"toy.reg": {"values": ["l1", "l2"]}},
        objectives=[{"metric": "toy/interference", "mode": "min"},
                    {"metric": "toy/val_mse", "mode": "min"}],
        baseline={"toy.reg": "l1"},
        searcher={"type": "grid", "seed": 0},
        budget={"seeds_per_config": 3},
    )
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out), "--no-tracking")
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    assert len(df) == 6 and (df["status"] == "finished").all()
    assert sorted(df.groupby("toy.reg")["seed"].apply(sorted).tolist()) == [[0, 1, 2]] * 2
    s = pd.read_csv(out / "summary.csv")
    row = s[(s["metric"] == "toy/interference") & (s["toy.reg"] == "l2")].iloc[0]
    assert row["n"] == 3 and row["baseline_n"] == 3
    assert pd.notna(row["t"]) and 0.0 <= row["p_value"] <= 1.0
    e = pd.read_csv(out / "effects.csv")  # a factorial grid: main effects l1 -> l2
    eff = e[e["metric"] == "toy/interference"].iloc[0]
    assert (eff["parameter"], eff["level"], eff["reference_level"]) == ("toy.reg", "l2", "l1")
    assert eff["t"] == pytest.approx(row["t"])  # one factor: the same two groups as summary.csv
    assert "Main effects on the objectives" in r.stdout
