"""Config validation of interventions, the registry, and the shipped example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tti_ray.config import ConfigError, load_config
from tti_ray.interventions import (
    KeyPathError,
    build_interventions,
    parse_interventions,
    register_intervention,
    registered,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPECTED = [
    "expt1_baseline",
    *(f"expt1_orthogonal_{c}" for c in ("1e-3", "1e-2", "1e-1")),
    *(f"expt1_polysemantic_{c}" for c in ("1e-3", "1e-2", "1e-1")),
    *(f"expt2_l1_{c}" for c in ("1e-4", "1e-3", "1e-2")),
    *(f"expt2_topk_{p}pct" for p in (10, 25, 50)),
    *(f"expt3_sae_{x}x" for x in (4, 8, 16)),
]


@pytest.mark.parametrize(
    "raw, path, msg",
    [
        ({"l1_act": {"coef": -1.0}}, "interventions.l1_act.coef", "greater than or equal to 0"),
        ({"topk": {"k": 0.0}}, "interventions.topk.k", "greater than 0"),
        ({"topk": {"k": 1.5}}, "interventions.topk.k", "less than or equal to 1"),
        ({"topk": {"k": 0.1, "kk": 2}}, "interventions.topk.kk", "unknown key"),
        ({"topk": {"k": 0.1, "coef": 0.1}}, "interventions.topk", "no loss term"),
        ({"topk": {"k": "ten"}}, "interventions.topk.k", "valid number"),
        ({"nope": {}}, "interventions.nope", "unknown intervention 'nope'"),
        ({"x": {"type": "nope"}}, "interventions.x.type", "unknown intervention"),
        ({"x": {"type": "l1_act", "sites": ["resid"]}}, "interventions.x.sites.0", "mlp_hidden"),
        ({"x": {"type": "l1_act", "layers": []}}, "interventions.x.layers", "at least one"),
        ({"anti_poly": {"over": "words"}}, "interventions.anti_poly.over", "token"),
        ({"anti_poly": {"categories": "/no/such.json"}},
         "interventions.anti_poly.categories", "cannot read category file"),
        ({"joint_sae": {"expansion": 0}}, "interventions.joint_sae.expansion", "greater than"),
        ({"l0_gate": {"coef_warmup_steps": -5}}, "interventions.l0_gate.coef_warmup_steps", ">="),
    ],
)
def test_bad_intervention_configs_name_the_key_path(raw, path, msg):
    with pytest.raises(KeyPathError) as e:
        parse_interventions(raw)
    assert e.value.path == path
    assert msg.replace(">=", "greater than or equal") in e.value.msg


def test_config_errors_reach_the_loader_with_file_and_path():
    with pytest.raises(ConfigError, match=r"<config>: interventions\.topk\.k: .*less than or eq"):
        load_config(raw={"preset": "tiny", "interventions": {"topk": {"k": 2.0}}})
    with pytest.raises(ConfigError, match=r"interventions\.l1_act\.layers: layer 5 does not exist"):
        load_config(raw={"preset": "tiny", "interventions": {"l1_act": {"layers": [5]}}})


def test_several_interventions_of_one_type_under_different_names(tiny_model_cfg):
    cfgs = parse_interventions(
        {"topk": {"k": 0.1}, "poly_early": {"type": "anti_poly", "coef": 1e-3, "layers": [0]},
         "poly_late": {"type": "anti_poly", "coef": 1e-2, "layers": [1]}}
    )
    ivs = build_interventions(cfgs, tiny_model_cfg)
    assert [type(iv).__name__ for iv in ivs.values()] == ["TopK", "AntiPoly", "AntiPoly"]
    assert ivs["poly_late"].site_keys() == [("mlp_hidden", 1)]


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_intervention("topk", registered()["topk"])


def test_every_builtin_is_registered():
    assert set(registered()) == {
        "orthogonality", "anti_poly", "l1_act", "l2_act", "weight_l1", "weight_l2",
        "topk", "l0_gate", "joint_sae", "overcomplete", "moe", "bottleneck",
    }


def test_example_and_disabled_configs_validate():
    for name, cls in registered().items():
        for raw in (cls.example_config(), {**cls.example_config(), **cls.disabled_config()}):
            parse_interventions({name: raw})


@pytest.mark.parametrize("stem", EXPECTED)
def test_shipped_example_configs_load_at_tiny_and_paper_scale(stem):
    path = CONFIGS / f"{stem}.yaml"
    text = path.read_text()
    assert text.startswith("# "), "one-line comment at the top"
    cfg = load_config(path)
    assert cfg.name == stem and cfg.preset == "tiny"
    assert cfg.model.n_layer == 2  # the tiny preset was merged under the file
    build_interventions(cfg.interventions, cfg.model)
    # the documented switch, ``--preset paper``: same interventions at the seed's scale
    paper = load_config(path, preset="paper")
    assert paper.model.n_layer == 6 and paper.interventions == cfg.interventions
