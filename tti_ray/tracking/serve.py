"""``python -m tti_ray.tracking serve``: a team / cluster-head MLflow tracking server.

Wraps ``mlflow server`` with a SQLite or Postgres backend store and a local or S3 artifact root,
bound to 127.0.0.1 unless ``--host`` says otherwise. By default the server *proxies* artifacts
(``--serve-artifacts``: clients upload through the server to ``--artifact-root``), so trial
workers need no S3 credentials, only the server does; ``--no-serve-artifacts`` makes clients
write to the artifact root directly (each node then needs the AWS credential chain and
``MLFLOW_S3_ENDPOINT_URL`` if it is not AWS).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tti_ray.cli import UsageError
from tti_ray.tracking.config import TrackingError, check_s3, ensure_sqlite_store

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _abs_sqlite(uri: str) -> str:
    path = uri[len("sqlite:///"):]
    return uri if path.startswith("/") else f"sqlite:///{Path(path).absolute()}"


def server_command(*, backend_store: str, artifact_root: str, host: str, port: int, workers: int,
                   serve_artifacts: bool, extra: list[str]) -> list[str]:
    """The ``mlflow server`` argv (validated; relative paths made absolute)."""
    scheme = backend_store.split(":", 1)[0].split("+")[0].lower()
    if scheme == "sqlite":
        backend_store = _abs_sqlite(backend_store)
    elif scheme not in ("postgresql", "mysql", "mssql"):
        raise UsageError(f"--backend-store {backend_store}: use sqlite:///path.db or "
                         "postgresql://host/db")
    if "://" not in artifact_root:
        artifact_root = str(Path(artifact_root).absolute())
    elif not artifact_root.startswith(("s3://", "gs://", "wasbs://", "file://")):
        raise UsageError(f"--artifact-root {artifact_root}: use a directory or s3://bucket/prefix")
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [mlflow_bin, "server", "--backend-store-uri", backend_store, "--host", host,
           "--port", str(port), "--workers", str(workers)]
    if serve_artifacts:
        cmd += ["--serve-artifacts", "--artifacts-destination", artifact_root]
    else:
        cmd += ["--no-serve-artifacts", "--default-artifact-root", artifact_root]
    return cmd + extra


def preflight_server(backend_store: str, artifact_root: str) -> None:
    """Fail in one line before ``mlflow server`` starts if its stores are unusable."""
    scheme = backend_store.split(":", 1)[0].split("+")[0].lower()
    if scheme == "sqlite":
        ensure_sqlite_store(_abs_sqlite(backend_store))
    elif scheme == "postgresql":
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise UsageError(f"--backend-store {backend_store.split('@')[-1]}: Postgres needs "
                             "the psycopg2 package (pip install psycopg2-binary)") from None
    if artifact_root.startswith("s3://"):
        check_s3(artifact_root, f"--artifact-root {artifact_root}")
    elif "://" not in artifact_root:
        try:
            Path(artifact_root).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"--artifact-root {artifact_root}: not writable ({e.strerror})"
                                ) from None


def serve(args: object) -> int:
    a = args
    cmd = server_command(
        backend_store=a.backend_store, artifact_root=a.artifact_root, host=a.host, port=a.port,
        workers=a.workers, serve_artifacts=a.serve_artifacts, extra=a.extra,
    )
    if a.dry_run:
        print(" ".join(cmd))
        return 0
    preflight_server(a.backend_store, a.artifact_root)
    if a.host not in LOOPBACK:
        print(f"[tti_ray.tracking] serving on {a.host}:{a.port}: reachable from other machines; "
              "MLflow has no auth by default (see --app-name basic-auth)", file=sys.stderr)
    print(f"[tti_ray.tracking] MLflow server: http://{a.host}:{a.port}  (backend "
          f"{a.backend_store.split('@')[-1]}, artifacts {a.artifact_root}"
          f"{', proxied' if a.serve_artifacts else ''})", file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)  # the server is this process: signals and exit codes pass through
