"""Toy config parsing: discriminated by kind, errors carry the ``toy.<key>`` path."""

from __future__ import annotations

import pytest

from tti_ray.config import ConfigError, load_config
from tti_ray.interventions.registry import KeyPathError
from tti_ray.toy import (
    SEED001_BASELINE,
    SEED001_CONFIGS,
    SEED001_REPORTED,
    AblationConfig,
    SuperpositionConfig,
    check_workload,
    full_factorial,
    parse_toy_config,
    resolve_toy,
)


def test_kind_selects_the_model_and_round_trips():
    sup = parse_toy_config({"kind": "superposition", "n_features": 2, "n_hidden": 1})
    abl = parse_toy_config({"kind": "ablation", "reg": "l2", "reg_lambda": 1e-3})
    assert isinstance(sup, SuperpositionConfig) and sup.n_hidden == 1
    assert isinstance(abl, AblationConfig) and abl.reg == "l2"
    for cfg in (sup, abl):
        assert parse_toy_config(cfg.model_dump(mode="json")) == cfg
        assert parse_toy_config(cfg) is cfg


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({"kind": "superposition", "feature_prob": 1.5}, "toy.feature_prob", "less than or equal"),
        ({"kind": "superposition", "bogus": 1}, "toy.bogus", "unknown key"),
        ({"kind": "ablation", "noise": "gaussian"}, "toy.noise", "bipolar"),
        ({"kind": "ablation", "steps": "10"}, "toy.steps", "valid integer"),
        ({"kind": "cube"}, "toy.kind", "superposition"),
        ({"feature_prob": 0.1}, "toy.kind", "superposition"),
        ({"kind": "superposition", "n_hidden": 5, "n_features": 5}, "toy", "n_hidden (5)"),
        ({"kind": "ablation", "correlation": 0.9}, "toy", "within [0, 1]"),
        ([1, 2], "toy", "mapping"),
    ],
)
def test_errors_name_the_key_path(raw, path, fragment):
    with pytest.raises(KeyPathError) as e:
        parse_toy_config(raw)
    assert e.value.path == path
    assert fragment in e.value.msg


def test_workload_must_match_kind():
    sup = SuperpositionConfig()
    check_workload("toy_superposition", sup)
    check_workload("toy_ablation", None)
    check_workload("lm", None)
    with pytest.raises(KeyPathError) as e:
        check_workload("toy_ablation", sup)
    assert e.value.path == "toy.kind"
    with pytest.raises(KeyPathError) as e:
        check_workload("lm", sup)
    assert e.value.path == "toy"
    assert parse_toy_config({"lr": 0.1}, workload="toy_ablation").kind == "ablation"
    assert resolve_toy("toy_superposition", None) == SuperpositionConfig()


def test_loader_reports_file_and_key_path():
    with pytest.raises(ConfigError, match=r"^<config>: toy\.feature_prob: "):
        load_config(
            raw={
                "workload": "toy_superposition",
                "toy": {"kind": "superposition", "feature_prob": 0},
            }
        )
    cfg = load_config(raw={"workload": "toy_ablation", "toy": {"kind": "ablation"}},
                      overrides={"toy.reg": "l2"})  # fmt: skip
    assert cfg.toy.reg == "l2"
    assert cfg.to_dict()["toy"]["kind"] == "ablation"


def test_seed001_grid():
    assert len(SEED001_CONFIGS) == 8 and SEED001_BASELINE in SEED001_CONFIGS
    assert SEED001_CONFIGS[SEED001_BASELINE] == {
        "init": "gaussian", "noise": "bipolar", "reg": "l1", "activation": "relu"}  # fmt: skip
    assert list(SEED001_CONFIGS.values())[-1] == {
        "init": "orthogonal", "noise": "student_t", "reg": "l2", "activation": "gelu"}  # fmt: skip
    assert set(SEED001_REPORTED) == set(SEED001_CONFIGS)
    grid = full_factorial()
    assert len(grid) == 16 and len({tuple(g.values()) for g in grid}) == 16
    assert all(c in grid for c in SEED001_CONFIGS.values())
    for values in grid:
        AblationConfig(**values)
