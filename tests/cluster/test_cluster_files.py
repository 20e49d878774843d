"""The cluster launcher files validate against Ray's own schema and carry no credentials."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
FILES = ["cluster.yaml", "cluster-local.yaml"]

CREDENTIAL_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"ASIA[0-9A-Z]{16}"),  # AWS temporary key id
    re.compile(r"(?i)aws_secret_access_key|aws_session_token|secret[_-]?key|password\s*[:=]"),
    re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),  # 40-char secret
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


@pytest.mark.parametrize("name", FILES)
def test_cluster_file_passes_rays_validator(name):
    raw = yaml.safe_load((ROOT / name).read_text())
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)  # jsonschema against ray-schema.json + Ray's own checks
    assert config["cluster_name"].startswith("tti-ray")


@pytest.mark.parametrize("name", FILES)
def test_cluster_file_has_no_credentials(name):
    text = (ROOT / name).read_text()
    for pattern in CREDENTIAL_PATTERNS:
        assert not pattern.search(text), f"{name}: credential-looking string {pattern.pattern}"


def test_aws_cluster_shape():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    nodes = raw["available_node_types"]
    worker = nodes["a100_worker"]
    assert worker["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert worker["max_workers"] == raw["max_workers"]  # one variable, used twice
    for node in nodes.values():  # S3 through an instance profile, not keys
        assert node["node_config"]["IamInstanceProfile"]["Name"]
    head_cmds = " ".join(raw["head_start_ray_commands"])
    assert "tti_ray.tracking serve" in head_cmds and "s3://" in head_cmds
    assert any("tti_ray.__version__" in c for c in raw["setup_commands"])


def test_validator_rejects_a_broken_file():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["available_node_types"]["a100_worker"]["min_workers"] = "many"
    with pytest.raises(Exception):
        validate_config(prepare_config(raw))
