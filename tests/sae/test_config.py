from __future__ import annotations

import pytest

from tti_ray.interventions.registry import KeyPathError
from tti_ray.sae import (
    SAE,
    ReLUSAEConfig,
    TopKSAEConfig,
    parse_sae_config,
    register_sae,
    registered_saes,
)


def test_default_is_topk_at_fixed_k():
    cfg = parse_sae_config()
    assert isinstance(cfg, TopKSAEConfig)
    assert (cfg.kind, cfg.k, cfg.expansion) == ("topk", 32, 8)


def test_kind_picks_its_own_config_class():
    cfg = parse_sae_config({"kind": "relu", "l1_coef": 2, "expansion": 16})
    assert isinstance(cfg, ReLUSAEConfig) and cfg.l1_coef == 2.0 and cfg.expansion == 16


@pytest.mark.parametrize(
    ("raw", "path", "msg"),
    [
        ({"kind": "gated"}, "sae.kind", "unknown SAE kind"),
        ({"l1_coef": 1.0}, "sae.l1_coef", "unknown key"),  # not a TopK key: no silent no-op
        ({"kind": "relu", "k": 4}, "sae.k", "unknown key"),
        ({"k": 0}, "sae.k", "greater than or equal"),
        ({"expansion": "8"}, "sae.expansion", "valid integer"),
        ({"layers": []}, "sae.layers", "at least one layer"),
        ({"sites": ["resid"]}, "sae.sites.0", "mlp_hidden"),
    ],
)
def test_errors_name_the_key(raw, path, msg):
    with pytest.raises(KeyPathError) as e:
        parse_sae_config(raw)
    assert e.value.path == path and msg in e.value.msg


def test_decoder_norm_weighting_needs_free_decoder_norms():
    with pytest.raises(KeyPathError, match="needs normalize_decoder: false"):
        parse_sae_config({"kind": "relu", "l1_decoder_norm": True})
    cfg = parse_sae_config({"kind": "relu", "l1_decoder_norm": True, "normalize_decoder": False})
    assert cfg.l1_decoder_norm and not cfg.normalize_decoder


def test_layers_resolve_and_check_against_model():
    assert parse_sae_config({"layers": [1, 0, 1]}).layer_indices(2) == [0, 1]
    assert parse_sae_config().layer_indices(3) == [0, 1, 2]
    with pytest.raises(KeyPathError, match="layer 2 does not exist"):
        parse_sae_config({"layers": [2]}).layer_indices(2)


def test_registry_refuses_duplicates():
    assert set(registered_saes()) >= {"topk", "relu"}
    with pytest.raises(ValueError, match="already registered"):
        register_sae("topk", SAE, TopKSAEConfig)
