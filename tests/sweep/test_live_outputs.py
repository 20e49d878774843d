"""Outputs written while a sweep is live must cope with a partial trial table."""

from __future__ import annotations

import pandas as pd

from tti_ray.sweep.outputs import write_outputs
from tti_ray.sweep.space import config_id, load_search_space

from .conftest import write_space

KEY = "interventions.anti_poly.coef"


def test_summary_waits_for_the_baseline_configuration(tmp_path):
    """A multi-seed sweep whose baseline has not started yet: the front is written, summary.csv
    is not (it used to raise and kill the sweep), and appears once the baseline is in."""
    space = load_search_space(write_space(
        tmp_path / "s.yaml", parameters={KEY: {"values": [0.0, 0.1]}},
        searcher={"type": "grid"}, budget={"seeds_per_config": 2}, baseline={KEY: 0.0}))
    rows = [{"trial_id": f"t{s}", "config_id": config_id({KEY: 0.1}), "status": "finished",
             "seed": s, KEY: 0.1, "val/perplexity": 10.0 + s,
             "val/polysemanticity/mean": 2.0 - s} for s in range(2)]
    out = write_outputs(space, tmp_path, pd.DataFrame(rows))
    assert (tmp_path / "pareto.csv").exists() and out["hypervolume"]
    assert not (tmp_path / "summary.csv").exists()

    rows += [{**r, "trial_id": f"b{r['seed']}", "config_id": config_id({KEY: 0.0}), KEY: 0.0,
              "val/perplexity": 12.0 + r["seed"]} for r in rows]
    write_outputs(space, tmp_path, pd.DataFrame(rows))
    s = pd.read_csv(tmp_path / "summary.csv")
    assert set(s["is_baseline"]) == {True, False}


def test_grid_main_effects_reference_is_the_first_listed_value(tmp_path):
    """Without a baseline, effects.csv contrasts against the first value the file lists, whatever
    order the trials finished in."""
    space = load_search_space(write_space(
        tmp_path / "s.yaml", parameters={KEY: {"values": [0.01, 0.1, 0.0]}},
        searcher={"type": "grid"}))
    rows = [{"trial_id": f"t{i}", "config_id": config_id({KEY: v}), "status": "finished",
             "seed": 0, KEY: v, "val/perplexity": 10.0 + i, "val/polysemanticity/mean": 2.0 - i}
            for i, v in enumerate([0.0, 0.1, 0.01, 0.0, 0.1, 0.01])]  # 0.0 finishes first
    out = write_outputs(space, tmp_path, pd.DataFrame(rows))
    e = out["effects"]
    assert set(e["reference_level"]) == {0.01} and set(e["level"]) == {0.1, 0.0}
    assert (tmp_path / "effects.csv").exists()
