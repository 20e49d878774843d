"""Credential filtering and config flattening (pure functions)."""

from __future__ import annotations

import pytest

from tti_ray.tracking.redact import (
    REDACTED,
    config_params,
    env_secrets,
    flatten,
    is_secret_key,
    param_value,
    redact_mapping,
    redact_text,
    redact_tree,
)

from .conftest import CONFIG_KEY_ID, CONFIG_SECRET


@pytest.mark.parametrize("key", [
    "aws_secret_access_key", "AWS_ACCESS_KEY_ID", "db.password", "MLFLOW_TRACKING_TOKEN",
    "hf-token", "auth", "api_key", "s3.secretKey".lower(), "session_token", "private_key",
])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [
    "tokens_seen", "data.tokenizer", "eval.metric_tokens", "train.lr", "PWD", "OLDPWD",
    "interventions.anti_poly.coef", "mlflow.parentRunId", "model.d_model", "author",
])
def test_not_secret_keys(key):
    assert not is_secret_key(key)


def test_values_that_look_secret_are_withheld():
    secrets = []  # patterns only, no environment
    assert redact_text(f"key={CONFIG_KEY_ID}!", secrets) == f"key={REDACTED}!"
    assert redact_text(CONFIG_SECRET, secrets) == REDACTED
    assert redact_text("postgresql://bob:s3cr3t@db:5432/optuna", secrets) == (
        f"postgresql://bob:{REDACTED}@db:5432/optuna")
    # look-alikes that are not credentials survive: a git sha (hex, one case), a path, a number
    sha = "edd6ea5172f6fe941da00ea798ad5cb974e80cc6"
    for ok in (sha, "/tmp/exp/runs/ab12cd34", "0.0012345", "https://host:5000/path",
               "roneneldan/TinyStories"):
        assert redact_text(ok, secrets) == ok


def test_environment_secrets_are_replaced_literally(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plain-looking-secret")
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "pw-123456")
    monkeypatch.setenv("PWD", "/tmp/somewhere")  # a setting, not a secret
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to replace blindly
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a setting under a secret-sounding name
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/etc/gcp.json")  # a path
    vals = env_secrets()
    assert "plain-looking-secret" in vals and "pw-123456" in vals
    assert not {"/tmp/somewhere", "1", "disabled", "/etc/gcp.json"} & set(vals)
    assert redact_text("a plain-looking-secret b pw-123456") == f"a {REDACTED} b {REDACTED}"


def test_params_tags_and_trees():
    got = redact_mapping({"db.password": "x", "train.lr": "0.001", "data.x": CONFIG_KEY_ID,
                          "empty_token": ""}, [])
    assert got == {"db.password": REDACTED, "train.lr": "0.001", "data.x": REDACTED,
                   "empty_token": ""}
    tree = {"a": {"api_key": "k", "list": [CONFIG_SECRET, 1]}, "b": 2}
    assert redact_tree(tree, []) == {"a": {"api_key": REDACTED, "list": [REDACTED, 1]}, "b": 2}


def test_flatten_gives_dotted_keys_and_params_are_strings():
    cfg = {"train": {"lr": 0.001, "steps": 20}, "interventions": {"anti_poly": {"coef": 1e-3}},
           "model": {"sites": ["mlp_hidden", "mlp_out"]}, "toy": None, "empty": {}}
    flat = flatten(cfg)
    assert flat == {"train.lr": 0.001, "train.steps": 20, "interventions.anti_poly.coef": 1e-3,
                    "model.sites": ["mlp_hidden", "mlp_out"], "toy": None, "empty": {}}
    params = config_params(cfg)
    assert params["interventions.anti_poly.coef"] == "0.001"
    assert params["model.sites"] == '["mlp_hidden", "mlp_out"]'
    assert params["toy"] == "None"
    assert len(param_value("x" * 10000)) == 6000
