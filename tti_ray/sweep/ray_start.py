"""Ray start-up for the sweep driver: a fresh local Ray of its own or the cluster at
``--address`` (probed first, with the token-authentication workaround), and the nodes either one
has, for the resource check in :mod:`tti_ray.sweep.preflight`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from tti_ray.cli import UsageError

CONNECT_TIMEOUT_S = 10.0


def local_nodes(num_cpus: int | None) -> list[dict[str, float]]:
    """What the local Ray this command starts will have: ``--num-cpus`` (else the CPUs Ray
    detects) and the visible GPUs."""
    if num_cpus is None:
        try:
            from ray._private.utils import get_num_cpus

            num_cpus = int(get_num_cpus())
        except (ImportError, AttributeError):
            num_cpus = os.cpu_count() or 1
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: no GPUs
        gpus = 0
    return [{"CPU": float(num_cpus), "GPU": float(gpus)}]


def ray_nodes() -> list[dict[str, float]]:
    import ray

    return [{k: float(v) for k, v in n.get("Resources", {}).items()}
            for n in ray.nodes() if n.get("Alive")]


def local_where(num_cpus: int | None) -> str:
    return f"the local Ray (--num-cpus {num_cpus})" if num_cpus else "the local Ray (this machine)"


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` / ``ray://host:port`` address; None for ``auto``."""
    if address == "auto":
        return None
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--address {address}: expected host:port, auto or ray://host:port")
    return host, int(port)


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """The address's port must answer within ``timeout`` seconds (Ray itself retries an
    unreachable GCS for minutes)."""
    hp = parse_address(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as e:
        raise UsageError(
            f"--address {address}: cannot reach it within {timeout:g} s ({e.strerror or e})"
        ) from None


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to ``address`` or start a fresh local Ray of this process's own (never attach
    to another Ray found on the machine: ``address="local"``)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # save Tune's experiment state at least every 5 s (Ray's default backs off to ≥ 10 s)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    # intermediate results may lack an objective (checkpoint-only steps, SAE metrics that come
    # at the end): objectives are checked against reported metric names at load time instead
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if address:
        probe_address(address)
        token_auth_like_auto()
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--address {address}: cannot connect ({msg[:200]})") from None
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)


def token_auth_like_auto() -> None:
    """Ray ≥ 2.5x turns token authentication on for ``ray start`` and ``--address auto`` when a
    token exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``), but never
    for an explicit ``host:port``: the connection is then refused. Do what ``auto`` does (a token
    sent to a cluster without authentication is ignored); an explicit ``RAY_AUTH_MODE`` wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray caches its config at import: re-read it, as Ray's own auto path does
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):
            pass
