"""An MLflow client that never stops training: retry, then spool to disk, then replay.

Every tracking call is a small JSON-able record (``op`` + ``args``). :class:`ResilientClient`
runs it with a few quick retries (exponential backoff). If the store still does not answer, the
client goes *offline*: it logs one warning, appends this call and every later one to a JSONL
spool next to the run's files (``mlflow_spool-<pid>.jsonl``) and returns at once, so training
goes on at full speed. At most every ``probe`` seconds (doubling up to ``max_probe``) the next
call first tries to replay the spool in order; when that succeeds the client is back online and
says so. A run created while offline gets a local id (``local-…``) that the replay maps to the
real run id (kept in ``mlflow_ids.json`` so that another process's spool in the same directory,
e.g. a DDP rank 0 worker's, resolves it too). Whatever is still spooled when a process ends is
replayed by the sweep driver at the end of the sweep, or later by
``python -m tti_ray.tracking replay DIR``.

Errors that retrying cannot fix (MLflow rejected the request: a bad value, a run that does not
exist) are logged and dropped instead of spooled; ``RESOURCE_ALREADY_EXISTS`` on replay (a call
that reached the store before its reply was lost) counts as success.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tti_ray.io import atomic_write_text

log = logging.getLogger("tti_ray.tracking")

SPOOL_GLOB = "mlflow_spool*.jsonl"
IDS_FILE = "mlflow_ids.json"
LOCAL_PREFIX = "local-"
_PERMANENT = {
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "INVALID_STATE",
    "PERMISSION_DENIED", "UNAUTHENTICATED", "ENDPOINT_NOT_FOUND", "NOT_FOUND",
}
_DONE_ANYWAY = {"RESOURCE_ALREADY_EXISTS"}

# MLflow's own HTTP layer retries 7 times with a backoff factor of 2 (minutes of blocking when
# the server is down); this module does the retrying, so MLflow gets one quick try per call.
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def quiet_http_retries() -> None:
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)


def warn(msg: str) -> None:
    """One line on stderr (Ray forwards trial stderr to the driver's console)."""
    import sys

    print(f"[tti_ray.tracking] WARNING: {msg}", file=sys.stderr, flush=True)


def error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def is_permanent(exc: BaseException) -> bool:
    return error_code(exc) in _PERMANENT


# -- the operations -------------------------------------------------------------------------------
def _metrics(rows: list[list[Any]]) -> list[Any]:
    from mlflow.entities import Metric

    return [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in rows]


def _execute(client: Any, op: str, a: dict[str, Any]) -> Any:
    """Run one record against an ``MlflowClient``; returns the run id for ``create_run``."""
    from mlflow.entities import Param, RunTag

    if op == "create_run":
        run = client.create_run(a["experiment_id"], run_name=a.get("run_name"),
                                tags=a.get("tags") or {})
        return run.info.run_id
    if op == "log_batch":
        client.log_batch(
            a["run_id"],
            metrics=_metrics(a.get("metrics") or []),
            params=[Param(k, v) for k, v in (a.get("params") or {}).items()],
            tags=[RunTag(k, v) for k, v in (a.get("tags") or {}).items()],
            synchronous=True,
        )
        return None
    if op == "log_artifact":
        if not Path(a["local_path"]).exists():
            warn(f"artifact {a['local_path']} no longer exists; not logged")
            return None
        client.log_artifact(a["run_id"], a["local_path"], a.get("artifact_path"))
        return None
    if op == "update_run":
        client.update_run(a["run_id"], status=a.get("status"), name=a.get("name"))
        return None
    if op == "set_terminated":
        client.set_terminated(a["run_id"], status=a["status"], end_time=a.get("end_time"))
        return None
    raise ValueError(f"unknown tracking op {op!r}")


class ResilientClient:
    """``MlflowClient`` calls with retry/backoff, then an on-disk spool while the store is away.

    ``spool_dir`` is where the spool and id map live (a run or experiment directory)."""

    def __init__(
        self,
        tracking_uri: str,
        spool_dir: str | Path,
        *,
        retries: int = 2,
        backoff: float = 0.5,
        probe: float = 5.0,
        max_probe: float = 60.0,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        quiet_http_retries()
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri)
        self.client, self.tracking_uri = client, tracking_uri
        self.dir = Path(spool_dir)
        self.spool = self.dir / f"mlflow_spool-{os.getpid()}.jsonl"
        self.retries, self.backoff = retries, backoff
        self.probe, self.max_probe = probe, max_probe
        self._clock, self._sleep = clock, sleep
        self._interval = probe
        self._next_probe = 0.0
        self.offline = False
        self.n_spooled = 0
        self.n_replayed = 0
        self._lock = threading.RLock()

    # -- public ------------------------------------------------------------------------------
    def create_run(self, experiment_id: str, run_name: str | None, tags: dict[str, str]) -> str:
        return self.call("create_run", experiment_id=experiment_id, run_name=run_name, tags=tags)

    def log_batch(self, run_id: str, metrics: list[list[Any]] | None = None,
                  params: dict[str, str] | None = None, tags: dict[str, str] | None = None) -> None:
        if metrics or params or tags:
            self.call("log_batch", run_id=run_id, metrics=metrics or [], params=params or {},
                      tags=tags or {})

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None
                     ) -> None:
        self.call("log_artifact", run_id=run_id, local_path=str(local_path),
                  artifact_path=artifact_path)

    def update_run(self, run_id: str, status: str) -> None:
        self.call("update_run", run_id=run_id, status=status)

    def set_terminated(self, run_id: str, status: str) -> None:
        self.call("set_terminated", run_id=run_id, status=status,
                  end_time=int(time.time() * 1000))

    def call(self, op: str, **args: Any) -> Any:
        with self._lock:
            if self.offline and self._clock() >= self._next_probe:
                self._try_replay()
            if self.offline:
                return self._spool(op, args)
            try:
                return self._with_retries(op, args)
            except Exception as e:  # noqa: BLE001 - anything transient: go offline, keep training
                if is_permanent(e):
                    warn(f"MLflow rejected {op} ({_short(e)}); dropped")
                    return None
                if error_code(e) in _DONE_ANYWAY:
                    return None
                self._go_offline(e)
                return self._spool(op, args)

    def flush(self, timeout: float = 0.0) -> bool:
        """Try to replay the spool (for up to ``timeout`` seconds); True if nothing is left."""
        deadline = self._clock() + timeout
        with self._lock:
            while True:
                if not self.offline and not self.spool.exists():
                    return True
                self._next_probe = 0.0
                self._try_replay()
                if not self.offline:
                    return True
                if self._clock() >= deadline:
                    return False
                self._sleep(min(self._interval, max(0.0, deadline - self._clock())))

    # -- internals ---------------------------------------------------------------------------
    def _with_retries(self, op: str, args: dict[str, Any]) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return _execute(self.client, op, resolve_ids(args, load_ids(self.dir)))
            except Exception as e:
                if is_permanent(e) or error_code(e) in _DONE_ANYWAY or attempt == self.retries:
                    raise
                self._sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _go_offline(self, exc: BaseException) -> None:
        self.offline = True
        self._interval = self.probe
        self._next_probe = self._clock() + self._interval
        warn(
            f"tracking store {self.tracking_uri} not answering ({_short(exc)}); training goes on, "
            f"calls are buffered in {self.spool} and replayed when it is back"
        )

    def _spool(self, op: str, args: dict[str, Any]) -> Any:
        rec: dict[str, Any] = {"op": op, "args": args, "t": time.time()}
        result = None
        if op == "create_run":
            result = rec["local_id"] = LOCAL_PREFIX + uuid.uuid4().hex
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.spool.open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        self.n_spooled += 1
        return result

    def _try_replay(self) -> None:
        try:
            n = replay_file(self.spool, self.client)
        except Exception as e:  # noqa: BLE001 - still away: probe again later
            self._interval = min(self._interval * 2, self.max_probe)
            self._next_probe = self._clock() + self._interval
            log.debug("replay failed: %s", e)
            return
        self.n_replayed += n
        if self.offline:
            warn(f"tracking store {self.tracking_uri} is back: replayed {n} buffered calls")
        self.offline = False
        self._interval = self.probe


def _short(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return s if len(s) <= 200 else s[:197] + "..."


# -- ids of runs created while offline ------------------------------------------------------------
def load_ids(directory: Path) -> dict[str, str]:
    path = Path(directory) / IDS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def save_id(directory: Path, local_id: str, run_id: str) -> None:
    ids = {**load_ids(directory), local_id: run_id}
    atomic_write_text(Path(directory) / IDS_FILE, json.dumps(ids, indent=1))


def resolve_ids(args: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    rid = args.get("run_id")
    if isinstance(rid, str) and rid.startswith(LOCAL_PREFIX):
        if rid not in ids:
            raise _Unresolved(rid)
        return {**args, "run_id": ids[rid]}
    return args


class _Unresolved(RuntimeError):
    """A spooled call for a run whose creation has not been replayed yet (retry later)."""


def replay_file(spool: Path, client: Any) -> int:
    """Replay ``spool`` in order; rewrite it with what is left after each success.

    Raises on the first call that still fails (the rest stays spooled); returns the number of
    calls replayed. The file is removed once empty."""
    if not spool.exists():
        return 0
    records = [json.loads(ln) for ln in spool.read_text().splitlines() if ln.strip()]
    done = 0
    try:
        for rec in records:
            ids = load_ids(spool.parent)
            try:
                result = _execute(client, rec["op"], resolve_ids(rec["args"], ids))
            except Exception as e:
                if error_code(e) in _DONE_ANYWAY:
                    result = None
                elif is_permanent(e):
                    warn(f"MLflow rejected replayed {rec['op']} ({_short(e)}); dropped")
                    result = None
                else:
                    raise
            if rec["op"] == "create_run" and result:
                save_id(spool.parent, rec["local_id"], result)
            done += 1
    finally:
        rest = records[done:]
        if rest:
            tmp = spool.with_name(spool.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rest))
            os.replace(tmp, spool)
        else:
            spool.unlink(missing_ok=True)
    return done


def replay_dir(root: str | Path, tracking_uri: str | None = None, client: Any = None
               ) -> tuple[int, list[Path]]:
    """Replay every spool under ``root`` (creations first, so ids resolve across files);
    returns (calls replayed, spools still pending)."""
    quiet_http_retries()
    spools = sorted(Path(root).rglob(SPOOL_GLOB))
    if not spools:
        return 0, []
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
    total, pending = 0, []
    for _ in range(2):  # a second pass resolves ids created by another file of the same dir
        pending = []
        for sp in spools:
            if not sp.exists():
                continue
            try:
                total += replay_file(sp, client)
            except Exception as e:  # noqa: BLE001
                log.debug("replay of %s stopped: %s", sp, e)
                pending.append(sp)
        if not pending:
            break
        spools = pending
    return total, pending
