"""The shipped search spaces say what their headers claim: the seed grids contain the seed's runs,
and every file is one ``--preset paper`` away from paper scale (config validation only, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tti_ray.config import load_config
from tti_ray.sweep.space import load_search_space

from .conftest import ROOT

SPACES = ROOT / "search_spaces"
CONFIGS = ROOT / "configs"
#: the language-model spaces (the toy_* spaces have no paper scale)
LM_SPACES = sorted(p for p in SPACES.glob("*.yaml") if not p.stem.startswith("toy_"))


def active(cfg) -> set[tuple]:
    """The interventions that change training, as (type, knob, value, sites)."""
    out = set()
    for iv in cfg.interventions.values():
        if iv.type == "topk":
            if iv.k < 1.0:
                out.add(("topk", "k", iv.k, tuple(iv.sites)))
        elif iv.coef > 0:
            out.add((iv.type, "coef", iv.coef, tuple(iv.sites)))
    return out


def grid_runs(name: str) -> list[set[tuple]]:
    space = load_search_space(SPACES / f"{name}.yaml")
    return [active(space.run_config(p)) for p in space.grid_points()]


@pytest.mark.parametrize(
    ("grid", "pattern", "n_points"),
    [("seed_expt1_grid", "expt1_*.yaml", 8), ("seed_expt2_grid", "expt2_*.yaml", 7)],
)
def test_seed_grid_contains_every_seed_config(grid: str, pattern: str, n_points: int):
    runs = grid_runs(grid)
    assert len(runs) == n_points
    seeds = sorted(CONFIGS.glob(pattern))
    assert len(seeds) >= 6
    for path in seeds:
        assert active(load_config(path)) in runs, path.name
    assert set() in runs  # the baseline (expt2 has no baseline file of its own)


def test_expt1_grid_runs_one_method_at_a_time():
    runs = grid_runs("seed_expt1_grid")
    assert all(len(r) <= 1 for r in runs)
    assert runs.count(set()) == 2  # coef 0 under either type: the baseline, twice
    space = load_search_space(SPACES / "seed_expt1_grid.yaml")
    assert space.n_trials() == 8 * 3


@pytest.mark.parametrize("path", LM_SPACES, ids=[p.stem for p in LM_SPACES])
def test_paper_scale_is_one_flag_away(path: Path):
    tiny = load_search_space(path)
    paper = load_search_space(path, preset="paper")
    point = {k: p.extremes()[-1] for k, p in paper.parameters.items()}
    cfg = paper.run_config(point)
    assert (cfg.model.n_layer, cfg.model.d_model, cfg.model.seq_len) == (6, 384, 512)
    assert active(cfg) == active(tiny.run_config(point))
    assert paper.n_trials() == tiny.n_trials()
