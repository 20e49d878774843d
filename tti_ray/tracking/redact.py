"""Keep credentials out of MLflow: params, tags and text artifacts pass through here.

A value is withheld when its *key* names a secret (``password``, ``secret``, ``token``,
``access_key``, ...; whole words of the dotted/underscored key, so ``tokens_seen`` and
``tokenizer`` are not secrets) or when the *value* looks like one: an AWS access key id
(``AKIA…``/``ASIA…`` + 16), a 40-character AWS-style secret (base64 alphabet with upper, lower
and digit), the password of a ``scheme://user:password@host`` URL, or the literal value of any
credential-like environment variable of this process (``AWS_SECRET_ACCESS_KEY``,
``MLFLOW_TRACKING_PASSWORD``, ...). The same rules rewrite text artifacts (config YAML, CSV,
JSON) before upload.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"

_SECRET_WORDS = (
    r"secret|password|passwd|passphrase|token|credentials?|api_?key|access_?key(?:_id)?|"
    r"secret_?key|private_?key|session_?token|auth|authorization|cookie|signature"
)
_SECRET_KEY_RE = re.compile(rf"(?:^|_)(?:{_SECRET_WORDS})(?:_|$)")
_AWS_KEY_ID_RE = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}"
    r"(?![A-Z0-9])"
)
_B64 = "A-Za-z0-9/+="
_AWS_SECRET_RE = re.compile(
    rf"(?<![{_B64}])(?=[{_B64}]{{0,39}}[A-Z])(?=[{_B64}]{{0,39}}[a-z])"
    rf"(?=[{_B64}]{{0,39}}[0-9/+])[{_B64}]{{40}}(?![{_B64}])"
)
_URL_PASSWORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/@\s:]*):([^/@\s]+)@")
# credentials MLflow, boto3 and friends read from the environment, whatever their names say
_ENV_SECRETS = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "DATABRICKS_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCESS_KEY", "PGPASSWORD",
}
_MIN_ENV_SECRET = 8  # shorter env values ("1", "true") are settings, not secrets


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def is_secret_key(key: str) -> bool:
    """True if any word of ``key`` (split on ``.``, ``/``, ``-``, ``_``) names a credential."""
    return bool(_SECRET_KEY_RE.search(_norm(key)))


def _secret_like(value: str) -> bool:
    """Worth replacing wherever it appears: long enough, not a path, not a plain word (an
    ``…_AUTH_MODE=disabled`` setting must not blank out every "disabled" in an artifact)."""
    return (len(value) >= _MIN_ENV_SECRET and not value.startswith(("/", "~", "."))
            and not value.isalpha())


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of credential-like environment variables, longest first (for literal replacement)."""
    env = os.environ if environ is None else environ
    vals = {
        v for k, v in env.items()
        if v and (k in _ENV_SECRETS or is_secret_key(k)) and _secret_like(v)
    }
    return sorted(vals, key=len, reverse=True)


def looks_secret(value: str, secrets: Iterable[str] | None = None) -> bool:
    """True if ``value`` contains something that must not be logged."""
    return redact_text(value, secrets) != value


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every credential-looking substring replaced by ``<redacted>``."""
    for s in env_secrets() if secrets is None else secrets:
        text = text.replace(s, REDACTED)
    text = _URL_PASSWORD_RE.sub(rf"\1:{REDACTED}@", text)
    text = _AWS_KEY_ID_RE.sub(REDACTED, text)
    return _AWS_SECRET_RE.sub(REDACTED, text)


def redact_mapping(items: Mapping[str, Any], secrets: Iterable[str] | None = None) -> dict:
    """Params/tags: values under secret keys, or that look secret, become ``<redacted>``."""
    sec = env_secrets() if secrets is None else list(secrets)
    out = {}
    for k, v in items.items():
        if is_secret_key(k) and v not in (None, ""):
            out[k] = REDACTED
        else:
            out[k] = redact_text(v, sec) if isinstance(v, str) else v
    return out


def redact_tree(data: Any, secrets: Iterable[str] | None = None) -> Any:
    """A nested dict/list (a config) with secret keys and secret-looking strings withheld."""
    sec = env_secrets() if secrets is None else list(secrets)
    if isinstance(data, Mapping):
        return {
            k: REDACTED if is_secret_key(str(k)) and data[k] not in (None, "")
            else redact_tree(data[k], sec)
            for k in data
        }
    if isinstance(data, (list, tuple)):
        return [redact_tree(v, sec) for v in data]
    if isinstance(data, str):
        return redact_text(data, sec)
    return data


# -- params -----------------------------------------------------------------------------------
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def param_value(v: Any) -> str:
    """How a config value reads as an MLflow param: scalars as ``str``, lists/dicts as JSON."""
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, sort_keys=True, default=str)
    else:
        s = str(v)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``; lists stay leaves, and an empty
    dict is kept as a leaf so that it still shows up as a param."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_params(cfg_dict: Mapping[str, Any]) -> dict[str, str]:
    """The flattened, redacted params of a resolved run config (dotted keys)."""
    flat = {k: param_value(v) for k, v in flatten(cfg_dict).items()}
    return redact_mapping(flat)
