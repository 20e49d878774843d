"""The resource preflight's arithmetic and the address check (pure logic; the real-cluster
refusals are in tests/reliability/test_outside.py)."""

from __future__ import annotations

import socket

import pytest

from tti_ray.cli import UsageError
from tti_ray.sweep.preflight import check_resources, trial_demand
from tti_ray.sweep.ray_start import parse_address, probe_address
from tti_ray.sweep.space import SearchSpace

PARAMS = {"train.lr": {"values": [0.001]}}


def space(**kw) -> SearchSpace:
    return SearchSpace.model_validate({"name": "t", "parameters": PARAMS, **kw})


def test_one_worker_trial_is_one_bundle():
    bundles, keys = trial_demand(space(resources={"cpus_per_worker": 2, "gpus_per_worker": 0.5}))
    assert bundles == [{"CPU": 2.0, "GPU": 0.5}]
    assert keys["CPU"] == "resources.cpus_per_worker"


def test_ddp_trial_is_a_driver_plus_one_bundle_per_worker():
    bundles, keys = trial_demand(space(resources={"workers": 3, "cpus_per_worker": 1}))
    assert bundles == [{"CPU": 0.01}, {"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert keys["CPU"].startswith("resources.workers ×")


@pytest.mark.parametrize(("resources", "nodes", "needle"), [
    ({"cpus_per_worker": 3}, [{"CPU": 2.0}, {"CPU": 2.0}], "needs 3 CPU on one node"),
    ({"gpus_per_worker": 1}, [{"CPU": 8.0}], "needs 1 GPU on one node"),
    ({"workers": 2, "cpus_per_worker": 2}, [{"CPU": 2.0}, {"CPU": 1.0}], "needs 4.01 CPU in all"),
    ({"custom": {"tpu": 1}}, [{"CPU": 8.0}], "resources.custom.tpu"),
])
def test_what_no_cluster_can_hold_is_refused(resources, nodes, needle):
    with pytest.raises(UsageError, match=needle.replace(".", r"\.")):
        check_resources(space(resources=resources), nodes, "the cluster")


@pytest.mark.parametrize(("resources", "nodes"), [
    ({"cpus_per_worker": 2}, [{"CPU": 2.0}]),
    ({"workers": 2, "cpus_per_worker": 2}, [{"CPU": 2.01}, {"CPU": 2.0}]),  # spread over nodes
    ({"gpus_per_worker": 0.5}, [{"CPU": 1.0, "GPU": 1.0}]),
])
def test_what_fits_passes(resources, nodes):
    check_resources(space(resources=resources), nodes, "the cluster")


def test_sae_eval_task_must_fit_a_node():
    s = space(sae_eval={"cpus": 4})
    with pytest.raises(UsageError, match="sae_eval.cpus: an SAE evaluation needs 4 CPU"):
        check_resources(s, [{"CPU": 2.0}], "the cluster")


@pytest.mark.parametrize("address", ["host", "host:", ":80", "host:0", "host:99999", "h:x"])
def test_malformed_addresses(address):
    with pytest.raises(UsageError, match="--address"):
        parse_address(address)


def test_auto_and_ray_client_addresses_parse():
    assert parse_address("auto") is None
    assert parse_address("ray://10.0.0.1:10001") == ("10.0.0.1", 10001)


def test_closed_port_fails_within_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UsageError, match="cannot reach"):
        probe_address(f"127.0.0.1:{port}", timeout=2)
