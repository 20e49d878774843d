"""``python -m analysis.report``: partial sweeps say what is missing; statistics match scipy;
the report goes to the sweep's parent MLflow run."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.report import build_report, choose_baseline, log_report, main
from analysis.sources import load_source
from tests.analysis.conftest import COEF, POLY, PPL, multi_seed_trials, run_cli


def test_partial_sweep_report_says_what_is_missing(partial_exp, tmp_path):
    out = tmp_path / "report"
    r = run_cli("analysis.report", str(partial_exp), "--out", str(out))
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    info = json.loads((out / "report.json").read_text())
    line = info["status"]["line"]
    assert re.fullmatch(
        r"3 of 8 trials finished; 2 running \(trial table last written \d+ s ago\); "
        r"1 pending; 1 failed; 1 not started yet",
        line,
    )
    assert line in page and "partial sweep" in page
    missing = " | ".join(info["missing"])
    assert "no SAE metrics" in missing
    assert "one seed per configuration" in missing
    assert "no local checkpoints" in missing
    assert "What is missing" in page and line in r.stdout
    # every figure is inlined and the page asks for nothing over the network
    assert page.count("data:image/png;base64,") == 5
    assert "http://" not in page and "https://" not in page
    for f in (
        "pareto.csv",
        "pareto.parquet",
        "front.png",
        "layers.png",
        "sensitivity.png",
        "correlations.png",
        "hypervolume.png",
        "summary_vs_baseline.csv",
    ):
        assert (out / f).exists(), f
    assert info["baseline"] == "c0"  # smallest coefficient among configurations with a result


def test_empty_sweep_report(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "search_space.yaml").write_text(
        "name: empty\nparameters: {a.b: {values: [1, 2]}}\nbudget: {trials: 2}\n"
    )
    path = build_report(load_source(exp), tmp_path / "out")
    info = json.loads((path.parent / "report.json").read_text())
    assert info["status"]["line"] == "0 of 2 trials finished; 2 not started yet"


def test_welch_and_ci_match_scipy(multi_exp, tmp_path):
    build_report(load_source(multi_exp), tmp_path / "o", checkpoints=False)
    s = pd.read_csv(tmp_path / "o" / "summary_vs_baseline.csv")
    df = multi_seed_trials()
    assert choose_baseline(df, [COEF]) == "cfg0"
    base = df[df.config_id == "cfg0"]
    for cid in ("cfg1", "cfg2"):
        x = df[df.config_id == cid]
        for m in (PPL, POLY):
            row = s[(s.config_id == cid) & (s.metric == m)].iloc[0]
            t = stats.ttest_ind(x[m], base[m], equal_var=False)
            assert row["t"] == pytest.approx(t.statistic) and row["p_value"] == pytest.approx(
                t.pvalue
            )
            lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x[m].mean(), scale=stats.sem(x[m]))
            assert row["ci95"] == pytest.approx((hi - lo) / 2)
            assert row["std"] == pytest.approx(np.std(x[m], ddof=1))
    assert s[s.config_id == "cfg0"]["is_baseline"].all()
    page = (tmp_path / "o" / "report.html").read_text()
    assert "p (Holm)" in page and "one seed per configuration" not in page


def test_baseline_flag(multi_exp, tmp_path, capsys):
    assert (
        main(
            [str(multi_exp), "--out", str(tmp_path / "o"), "--baseline", "cfg2", "--no-checkpoints"]
        )
        == 0
    )
    assert json.loads((tmp_path / "o" / "report.json").read_text())["baseline"] == "cfg2"
    with pytest.raises(SystemExit) as e:
        main([str(multi_exp), "--out", str(tmp_path / "o"), "--baseline", "nope"])
    assert e.value.code == 2 and "--baseline" in capsys.readouterr().err


def test_report_from_mlflow_logged_to_the_parent_run(mlflow_store, tmp_path):
    uri, client, ids = mlflow_store
    path = build_report(load_source(f"mlflow:anti_poly@{uri}"), tmp_path / "o")
    info = json.loads((path.parent / "report.json").read_text())
    assert info["status"]["line"] == "2 of 4 trials finished; 1 running; 1 not in MLflow yet"
    # t0's checkpoint.json points at a directory with empty files: said, not fatal
    assert any("checkpoint of t0 could not be analysed" in m for m in info["missing"])
    art = log_report(path, uri, ids["parent"])
    assert art.endswith("/analysis/report.html")
    names = {a.path for a in client.list_artifacts(ids["parent"], "analysis")}
    assert {"analysis/report.html", "analysis/front.png", "analysis/pareto.csv"} <= names


@pytest.mark.slow
def test_report_analyses_checkpoints(exp_with_checkpoint, tmp_path):
    path = build_report(load_source(exp_with_checkpoint), tmp_path / "o", probe_tokens=512)
    info = json.loads((path.parent / "report.json").read_text())
    assert set(info["utilization"]) == set(info["probes"])
    assert len(info["probes"]) == 2  # baseline (m00) and the front configuration with a checkpoint
    for results in info["probes"].values():
        assert {(r["site"], r["layer"]) for r in results} == {("mlp_hidden", 0), ("resid_post", 0)}
    assert not any("checkpoint" in m for m in info["missing"])
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 7  # + utilization and probes
    assert (path.parent / "neurons" / "m00" / "neurons_mlp_hidden_L0.html").exists()
