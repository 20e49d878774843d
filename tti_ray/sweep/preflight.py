"""Checks that run before any trial: data, storage, the experiment directory, the Ray address,
and whether a trial's resources can ever be scheduled.

Ray queues a trial whose resource request no node can satisfy and waits forever (an autoscaler
might add a node), so the sweep compares each trial's demand with what the cluster has - before
Ray starts for a local run (the ``--num-cpus`` it will start, the machine's GPUs; also in
``--dry-run``), and against ``ray.nodes()`` once connected - and refuses in one line what can
never run. On an autoscaling cluster whose nodes appear on demand, pass ``--skip-resource-check``.
What the nodes are comes from :mod:`tti_ray.sweep.ray_start`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from tti_ray.cli import UsageError
from tti_ray.data import DataError, load_tokens
from tti_ray.data.batches import require_blocks
from tti_ray.sweep.space import SearchSpace
from tti_ray.tracking.config import check_s3

DDP_DRIVER_CPU = 0.01  # a DDP trial's own process only drives a TorchTrainer


def is_uri(path: str) -> bool:
    return "://" in path


def check_writable(exp_dir: Path) -> None:
    """Fail before any trial starts if the experiment directory cannot be written (probed in
    the nearest existing ancestor, so a failed check creates nothing)."""
    if exp_dir.exists() and not exp_dir.is_dir():
        raise UsageError(f"--out: {exp_dir} exists and is not a directory")
    probe_dir = exp_dir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UsageError(f"--out: {probe_dir} is not a directory")
    try:
        probe = probe_dir / f".tti_ray_write_probe_{uuid.uuid4().hex}"
        with probe.open("wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"--out: experiment directory {exp_dir} is not writable ({e.strerror})"
        ) from None
    free = shutil.disk_usage(probe_dir).free
    if free < 50 * 2**20:
        raise UsageError(f"--out: only {free // 2**20} MiB free at {exp_dir} (need ≥ 50 MiB)")


def check_storage(storage: str) -> None:
    """An ``s3://`` Tune storage must exist and take writes with the credentials at hand; a
    local one must not be a regular file."""
    if not is_uri(storage):
        p = Path(storage)
        if p.exists() and not p.is_dir():
            raise UsageError(f"--storage {storage}: exists and is not a directory")
        return
    if storage.startswith("s3://"):

        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        if endpoint and not os.environ.get("AWS_ENDPOINT_URL"):
            os.environ["AWS_ENDPOINT_URL"] = endpoint  # pyarrow (Tune) reads this one
        check_s3(storage, f"--storage {storage}")
    elif not storage.startswith(("gs://", "file://", "hdfs://")):
        raise UsageError(f"--storage {storage}: unsupported scheme (local path, s3://, gs://)")


def check_data(space: SearchSpace) -> None:
    """Tokenize (or find cached) the base run's data on the driver: a dataset or tokenizer
    that cannot be loaded is an error before any trial starts, and local trials start warm."""

    cfg = space.run_config({})
    if cfg.workload != "lm":
        return
    try:
        tokens = load_tokens(cfg.data)
        require_blocks(tokens.train, tokens.valid, cfg.model.seq_len)
    except DataError as e:
        raise DataError(f"base.{e}") from None


# -- resources ------------------------------------------------------------------------------------
def trial_demand(space: SearchSpace) -> tuple[list[dict[str, float]], dict[str, str]]:
    """The resource bundles of one trial (each must fit on one node) and, per resource, the
    search-space keys it comes from."""
    r = space.resources
    worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker, **r.custom}
    worker = {k: float(v) for k, v in worker.items() if v > 0}
    keys = {"CPU": "resources.cpus_per_worker", "GPU": "resources.gpus_per_worker",
            **{k: f"resources.custom.{k}" for k in r.custom}}
    if r.workers == 1:
        return [worker], keys
    keys = {k: f"resources.workers × {v}" for k, v in keys.items()}
    return [{"CPU": DDP_DRIVER_CPU}] + [dict(worker) for _ in range(r.workers)], keys


def _blamed(key: str, sets: list[str] | tuple[str, ...]) -> str:
    """``key``, prefixed with the ``--set`` item that gave it a value, if one did."""
    parts = [p.strip() for p in key.split("×")]  # "resources.workers × resources.cpus_per_worker"
    for item in reversed(sets):
        k = item.split("=", 1)[0].strip()
        if any(p == k or p.startswith(k + ".") for p in parts):
            return f"--set {item}: {key}"
    return key


def check_resources(space: SearchSpace, nodes: list[dict[str, float]], where: str,
                    sets: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse (one line) a trial or SAE task that no node / the whole cluster can ever hold.
    The message names the key, and the ``--set`` that gave it its value if one did."""
    bundles, keys = trial_demand(space)
    demands = [("a trial", bundles, keys)]
    if space.sae_eval is not None and space.sae_eval.enabled and not space.sae_inline:
        sae = {k: v for k, v in (("CPU", space.sae_eval.cpus), ("GPU", space.sae_eval.gpus))
               if v > 0}
        demands.append(("an SAE evaluation", [sae], {"CPU": "sae_eval.cpus",
                                                      "GPU": "sae_eval.gpus"}))
    total: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            total[k] = total.get(k, 0.0) + v
    for what, bs, ks in demands:
        need: dict[str, float] = {}
        for b in bs:
            for k, v in b.items():
                need[k] = need.get(k, 0.0) + v
                biggest = max((n.get(k, 0.0) for n in nodes), default=0.0)
                if v > biggest + 1e-9:
                    raise UsageError(
                        f"{_blamed(ks.get(k, k), sets)}: {what} needs {_fmt(v)} {k} on one "
                        "node but the "
                        f"largest node of {where} has {_fmt(biggest)} (it would wait forever; "
                        "--skip-resource-check if an autoscaler adds bigger nodes)"
                    )
        for k, v in need.items():
            if v > total.get(k, 0.0) + 1e-9:
                raise UsageError(
                    f"{_blamed(ks.get(k, k), sets)}: {what} needs {_fmt(v)} {k} in all but "
                    f"{where} has "
                    f"{_fmt(total.get(k, 0.0))} (it would wait forever; --skip-resource-check "
                    "if an autoscaler adds nodes)"
                )


def _fmt(v: float) -> str:
    return f"{v:g}"
