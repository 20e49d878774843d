"""``python -m analysis.pareto``: the exported front is exactly the non-dominated set."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.pareto import main
from analysis.sources import load_source
from tests.analysis.conftest import (
    COEF,
    POLY,
    PPL,
    SPACE,
    front_trials,
    run_cli,
    write_experiment,
)
from tti_ray.fronts import hypervolume, non_dominated_mask

FILES = ("pareto.csv", "pareto.json", "pareto.parquet", "hypervolume.json", "front.png")


def brute_force_front(points: np.ndarray, modes: list[str]) -> np.ndarray:
    """The definition: a finite row is on the front iff no other finite row is <= in every
    objective and < in one (max objectives negated)."""
    p = points * np.array([-1.0 if m == "max" else 1.0 for m in modes])
    fin = np.isfinite(p).all(1)
    out = np.zeros(len(p), bool)
    for i in np.flatnonzero(fin):
        out[i] = not any(
            (p[j] <= p[i]).all() and (p[j] < p[i]).any() for j in np.flatnonzero(fin) if j != i
        )
    return out


def test_cli_writes_the_non_dominated_set(tmp_path):
    df = front_trials(40)
    exp = write_experiment(tmp_path / "exp", df, SPACE)
    out = tmp_path / "out"
    r = run_cli("analysis.pareto", str(exp), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert all((out / f).stat().st_size > 0 for f in FILES)

    fin = df[df["status"] == "finished"]
    pts = fin[[PPL, POLY]].to_numpy(float)
    expected = set(fin["trial_id"][brute_force_front(pts, ["min", "min"])])
    assert expected == set(fin["trial_id"][non_dominated_mask(pts, ["min", "min"])])
    got_csv = pd.read_csv(out / "pareto.csv")
    got_parquet = pd.read_parquet(out / "pareto.parquet")
    got_json = json.loads((out / "pareto.json").read_text())
    assert set(got_csv["trial_id"]) == expected
    assert set(got_parquet["trial_id"]) == expected
    assert {p["trial_id"] for p in got_json["points"]} == expected
    assert len(got_csv) == len(expected)  # duplicates of a front point are all kept, once each
    assert got_csv[PPL].is_monotonic_increasing  # best first in the first objective
    assert got_json["reference_rule"].startswith("nadir")


def test_objectives_flag_with_max_and_three_objectives(tmp_path):
    df = front_trials(30, seed=1)
    exp = write_experiment(tmp_path / "exp", df, SPACE)
    spec = f"{PPL}:min,{POLY}:max,val/sparsity/mean:min"
    assert main([str(exp), "--objectives", spec, "--out", str(tmp_path / "o")]) == 0
    fin = df[df["status"] == "finished"]
    pts = fin[[PPL, POLY, "val/sparsity/mean"]].to_numpy(float)
    modes = ["min", "max", "min"]
    expected = set(fin["trial_id"][brute_force_front(pts, modes)])
    assert set(pd.read_csv(tmp_path / "o" / "pareto.csv")["trial_id"]) == expected
    assert expected == set(fin["trial_id"][non_dominated_mask(pts, modes)])


def test_fixed_reference_gives_the_hand_computed_hypervolume(tmp_path):
    # front (1,3), (2,2), (3,1) w.r.t. (4,4): 3 + 2 + 1 = 6; the dominated (3,3) adds nothing
    df = pd.DataFrame(
        {
            "trial_id": list("abcd"),
            "config_id": list("abcd"),
            "status": "finished",
            "seed": 0,
            COEF: [1e-4, 1e-3, 1e-2, 1e-1],
            PPL: [1.0, 2.0, 3.0, 3.0],
            POLY: [3.0, 2.0, 1.0, 3.0],
        }
    )
    exp = write_experiment(tmp_path / "exp", df, SPACE)
    assert main([str(exp), "--ref", "4,4", "--out", str(tmp_path / "o")]) == 0
    hv = json.loads((tmp_path / "o" / "hypervolume.json").read_text())
    assert hv["hypervolume"] == pytest.approx(6.0)
    assert hv["reference_point"] == {PPL: 4.0, POLY: 4.0}
    assert hv["hypervolume"] == pytest.approx(
        hypervolume(df[[PPL, POLY]].to_numpy(), ["min"] * 2, [4, 4])
    )


def test_multi_seed_front_is_over_configuration_means(multi_exp, tmp_path):
    assert main([str(multi_exp), "--out", str(tmp_path / "o")]) == 0
    table = pd.read_csv(tmp_path / "o" / "pareto.csv")
    means = load_source(multi_exp).trials.groupby("config_id")[[PPL, POLY]].mean()
    expected = set(means.index[non_dominated_mask(means.to_numpy(), ["min", "min"])])
    assert set(table["config_id"]) == expected
    assert (table["n_seeds"] == 4).all()
    assert pd.read_parquet(tmp_path / "o" / "pareto.parquet")["trial_ids"].map(len).eq(4).all()


def test_partial_sweep_without_objective_values(tmp_path, capsys):
    df = pd.DataFrame(
        {"trial_id": ["x"], "config_id": ["c"], "status": ["running"], "seed": [0], COEF: [1e-3]}
    )
    exp = write_experiment(tmp_path / "exp", df, SPACE)
    assert main([str(exp), "--out", str(tmp_path / "o")]) == 0
    assert "no values yet" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "o" / "pareto.csv")) == 0


@pytest.mark.parametrize(
    "args, msg",
    [
        (["/nonexistent/exp"], "not a directory"),
        (["{exp}", "--objectives", "val/perplexity:best"], "mode must be"),
        (["{exp}", "--objectives", "val/nope:min"], "val/nope"),
        (["{exp}", "--ref", "1,x"], "--ref"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, msg):
    exp = write_experiment(tmp_path / "exp", front_trials(5), SPACE)
    with pytest.raises(SystemExit) as e:
        main([a.format(exp=exp) for a in args] + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1
