from __future__ import annotations

from pathlib import Path

import pytest

from tti_ray.config import ConfigError
from tti_ray.sweep.space import config_id, load_search_space

from .conftest import ROOT, write_space

SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_search_spaces_validate(path: Path):
    space = load_search_space(path)
    assert space.n_trials() >= 1
    assert space.run_config({k: p.extremes()[0] for k, p in space.parameters.items()})


def test_paper_preset_is_one_flag_away():
    space = load_search_space(ROOT / "search_spaces" / "anti_poly.yaml", preset="paper")
    cfg = space.run_config({"interventions.anti_poly.coef": 0.01})
    assert (cfg.model.n_layer, cfg.model.d_model, cfg.model.seq_len) == (6, 384, 512)
    assert cfg.interventions["anti_poly"].coef == 0.01


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"parameters": {}}, "parameters: empty search space"),
        ({"searcher": {"type": "hyperband"}}, "searcher.type"),
        ({"scheduler": {"type": "pbt"}}, "scheduler.type"),
        ({"parameters": {"train.nonexistent": {"values": [1, 2]}}},
         "parameters.train.nonexistent: unknown key"),
        ({"parameters": {"train.lr": {"distribution": "loguniform", "low": 1.0, "high": 0.1}}},
         "parameters.train.lr"),
        ({"parameters": {"interventions.anti_poly.coef": {"values": [-1.0, 0.1]}}},
         "parameters.interventions.anti_poly.coef"),
        ({"budget": {"trials": 0}}, "budget.trials"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"searcher": {"type": "grid"}}, "grid needs 'values'"),
        ({"objectives": []}, "objectives"),
    ],
)
def test_bad_search_spaces_name_file_and_key(tmp_path, over, needle):
    path = write_space(tmp_path / "bad.yaml", **over)
    with pytest.raises(ConfigError) as e:
        load_search_space(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and needle in msg


def test_set_overrides_and_grid_points(tmp_path):
    path = write_space(tmp_path / "s.yaml")
    space = load_search_space(
        path, ["searcher.type=grid", "budget.seeds_per_config=2"]
        + ["parameters={interventions.anti_poly.coef: {values: [0.0, 0.01, 0.1]}}"]
    )
    assert space.n_configs() == 3 and space.n_trials() == 6
    ids = {config_id(p) for p in space.grid_points()}
    assert len(ids) == 3


# -- issue 22: validation completes the plan -----------------------------------------------------------
def test_set_errors_blame_the_flag_not_the_file(tmp_path):
    import pytest
    import yaml as _yaml

    from tti_ray.config import ConfigError
    from tti_ray.sweep.space import load_search_space

    p = tmp_path / "s.yaml"
    p.write_text(_yaml.safe_dump({"name": "s", "parameters": {"train.lr": {"values": [0.001]}}}))
    with pytest.raises(ConfigError, match=r"^--set budget.trials=0: budget.trials"):
        load_search_space(p, ["budget.trials=0"])
    with pytest.raises(ConfigError, match=r"^--set base.model.n_head=3: base: model"):
        load_search_space(p, ["base.model.n_head=3"])
    with pytest.raises(ConfigError, match=rf"^{p}: budget.trials"):  # the file's own error
        p.write_text(_yaml.safe_dump({"name": "s", "budget": {"trials": 0},
                                      "parameters": {"train.lr": {"values": [0.001]}}}))
        load_search_space(p, ["concurrency=1"])


def test_a_large_choice_is_checked_value_by_value_quickly(tmp_path):
    import time

    import pytest
    import yaml as _yaml

    from tti_ray.config import ConfigError
    from tti_ray.sweep.space import MAX_VALUES, load_search_space

    values = list(range(MAX_VALUES - 1)) + [-5]  # the bad one last: every value is looked at
    p = tmp_path / "s.yaml"
    p.write_text(_yaml.safe_dump({"name": "s", "parameters": {"train.seed": {"values": values}}}))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="parameters.train.seed"):
        load_search_space(p)
    assert time.perf_counter() - t0 < 5.0  # was ~1.5 ms a value (15 s here)


def test_int_bounds_are_never_truncated():
    import pytest
    from pydantic import ValidationError

    from tti_ray.sweep.space import Parameter

    with pytest.raises(ValidationError, match="int bounds must be integers"):
        Parameter(distribution="int", low=1.5, high=4.7)
    p = Parameter(distribution="int", low=2.0, high=8.0, step=2.0)
    assert p.optuna_distribution().step == 2 and p.extremes() == [2, 8]
