"""Where runs are tracked, and the preflight that checks it before any trial starts.

Defaults (no flags): a SQLite store inside the experiment directory,
``sqlite:///DIR/mlflow.db``, artifacts under ``DIR/mlartifacts``, MLflow experiment named after
the search space, so ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`` shows the sweep
with no server. ``--tracking-uri http(s)://host:port`` logs to a shared server (credentials in
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` or ``_TOKEN``, never in the URI: the URI is stored in
the experiment state). ``--artifact-store s3://bucket/prefix`` (or a directory) sets where a *new*
MLflow experiment keeps artifacts: boto3 with the standard AWS credential chain and
``MLFLOW_S3_ENDPOINT_URL`` for S3-compatible stores. Without it, a server's own artifact root
(e.g. ``mlflow-artifacts:/`` proxied by ``python -m tti_ray.tracking serve``) is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tti_ray.cli import UsageError
from tti_ray.io import atomic_write_text
from tti_ray.tracking.client import HTTP_ENV, _short

STATE_FILE = "mlflow_run.json"
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class TrackingError(UsageError):
    """The tracking store or artifact location is unusable (one line naming which)."""


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str
    experiment_name: str
    artifact_location: str | None = None  # for a new experiment; None: the store's default
    uri_from_flag: bool = False
    artifact_from_flag: bool = False

    def uri_label(self) -> str:
        return f"--tracking-uri {self.tracking_uri}" if self.uri_from_flag else (
            f"tracking store {self.tracking_uri}")

    def artifact_label(self, location: str) -> str:
        if self.artifact_from_flag:
            return f"--artifact-store {location}"
        return f"artifact location {location} (experiment '{self.experiment_name}')"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackingConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def add_tracking_args(p: Any, *, default: str) -> None:
    """``--tracking-uri`` / ``--artifact-store`` flags (shared by the sweep and train CLIs)."""
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI, e.g. http://host:5000 or "
                                          f"sqlite:///path/mlflow.db (default: {default})")
    p.add_argument("--artifact-store", help="artifact location of a new MLflow experiment, e.g. "
                                            "s3://bucket/prefix (honours MLFLOW_S3_ENDPOINT_URL "
                                            "and the AWS credential chain) or a directory")


def _uri_or_path(value: str) -> str:
    if "://" in value or value.startswith(("mlflow-artifacts:", "file:")):
        return value
    return Path(value).absolute().as_uri()


def check_uri(tracking_uri: str, label: str) -> str:
    scheme = tracking_uri.split(":", 1)[0].lower() if ":" in tracking_uri else ""
    if "://" in tracking_uri and re.match(r"^[a-z][a-z0-9+.\-]*://[^/@\s]*:[^/@\s]*@", tracking_uri,
                                          re.IGNORECASE):
        raise TrackingError(
            f"{label.split(' ', 1)[0]}: credentials in the URI would be stored with the "
            "experiment; put them in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN) instead"
        )
    if scheme in ("http", "https", "databricks", "file") or scheme.split("+")[0] in _SQL_SCHEMES:
        return tracking_uri
    if "://" not in tracking_uri:  # a directory: MLflow's file store
        return Path(tracking_uri).absolute().as_uri()
    raise TrackingError(f"{label}: unsupported tracking URI scheme '{scheme}' (use http(s)://, "
                        "sqlite:///, postgresql:// or a directory)")


def resolve_tracking(
    *,
    exp_dir: Path,
    experiment_name: str,
    tracking_uri: str | None,
    artifact_store: str | None,
    enabled: bool = True,
    resume: bool = False,
) -> TrackingConfig | None:
    """The sweep's tracking: flags, else what a resumed sweep used, else the local default."""
    if not enabled:
        if tracking_uri or artifact_store:
            raise UsageError("--no-tracking cannot be combined with --tracking-uri/--artifact-store")
        return None
    state = load_state(exp_dir) if resume else None
    if state and not tracking_uri and not artifact_store:
        return TrackingConfig.from_dict(state["tracking"])
    if tracking_uri:
        uri = check_uri(tracking_uri, f"--tracking-uri {tracking_uri}")
        art = _uri_or_path(artifact_store) if artifact_store else None
        if art is None and uri.startswith("sqlite:///"):  # not MLflow's ./mlruns of the cwd
            art = (Path(uri[len("sqlite:///"):]).absolute().parent / "mlartifacts").as_uri()
        return TrackingConfig(uri, experiment_name, art, True, bool(artifact_store))
    art = _uri_or_path(artifact_store) if artifact_store else (exp_dir / "mlartifacts").as_uri()
    return TrackingConfig(f"sqlite:///{exp_dir / 'mlflow.db'}", experiment_name, art, False,
                          bool(artifact_store))


def load_state(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def save_state(directory: Path, state: dict[str, Any]) -> None:
    atomic_write_text(Path(directory) / STATE_FILE, json.dumps(state, indent=1))


# -- preflight ------------------------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    """The useful part of a connection error (``[Errno 111] Connection refused``)."""
    m = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
    if m:
        return m.group(0).strip()
    if "timed out" in str(exc).lower():
        return "timed out"
    return _short(exc)


def preflight(tc: TrackingConfig) -> str:
    """Check the tracking store answers and the artifact location takes writes; return the MLflow
    experiment id (created if needed). Raises :class:`TrackingError` naming what is unusable."""
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)
    scheme = tc.tracking_uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        _check_server(tc)
    elif scheme == "sqlite":
        ensure_sqlite_store(tc.tracking_uri)
    from mlflow import MlflowClient

    client = MlflowClient(tc.tracking_uri)
    try:
        exp = client.get_experiment_by_name(tc.experiment_name)
        if exp is None:
            try:
                eid = client.create_experiment(tc.experiment_name,
                                               artifact_location=tc.artifact_location)
            except Exception as e:
                if getattr(e, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
                eid = client.get_experiment_by_name(tc.experiment_name).experiment_id
            exp = client.get_experiment(eid)
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingError(f"{tc.uri_label()}: tracking store not usable ({_short(e)})") from None
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"{tc.uri_label()}: MLflow experiment '{tc.experiment_name}' is "
                            "deleted; restore it (mlflow experiments restore) or rename the sweep")
    loc = exp.artifact_location
    if tc.artifact_from_flag and tc.artifact_location and (
            loc.rstrip("/") != tc.artifact_location.rstrip("/")):
        raise TrackingError(f"--artifact-store {tc.artifact_location}: MLflow experiment "
                            f"'{tc.experiment_name}' already keeps its artifacts at {loc}; "
                            "use that store or another sweep name")
    check_artifact_location(loc, tc.artifact_label(loc), tc.tracking_uri)
    return exp.experiment_id


def _check_server(tc: TrackingConfig) -> None:
    import requests

    url = tc.tracking_uri.rstrip("/")
    try:
        requests.get(f"{url}/health", timeout=5)  # any HTTP answer means something listens
    except requests.RequestException as e:
        raise TrackingError(f"{tc.uri_label()}: tracking server not reachable ({_reason(e)})"
                            ) from None
    from mlflow import MlflowClient

    try:
        MlflowClient(tc.tracking_uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001
        raise TrackingError(f"{tc.uri_label()}: tracking server does not answer the MLflow API "
                            f"({_short(e)})") from None


def check_artifact_location(location: str, label: str, tracking_uri: str | None = None) -> None:
    """A small write + delete at ``location`` (S3 via boto3, a directory, or the server proxy)."""
    if location.startswith("s3://"):
        check_s3(location, label)
    elif location.startswith("file:") or "://" not in location and ":" not in location:
        _check_dir(_local_path(location), label)
    elif location.startswith("mlflow-artifacts:"):
        _check_proxy(location, label, tracking_uri)


def _local_path(location: str) -> Path:
    """A plain path or a ``file:`` URI (percent-decoded: ``Path.as_uri`` writes ``+`` as %2B)."""
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    return Path(location)


def _check_dir(path: Path, label: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tti_ray_probe_{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise TrackingError(f"{label}: not writable ({e.strerror or e})") from None


def s3_client() -> Any:
    """boto3 S3 client as MLflow builds it: ``MLFLOW_S3_ENDPOINT_URL``, the default credential
    chain, short timeouts (a preflight should fail in seconds, not minutes)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
        verify=os.environ.get("MLFLOW_S3_IGNORE_TLS", "").lower() != "true",
        config=Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2}),
    )


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def check_s3(uri: str, label: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, prefix = split_s3(uri)
    if not bucket:
        raise TrackingError(f"{label}: no bucket in the URI (s3://bucket/prefix)")
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3"
    try:
        s3 = s3_client()
        s3.head_bucket(Bucket=bucket)
        key = f"{prefix}/.tti_ray_preflight/{uuid.uuid4().hex}".lstrip("/")
        s3.put_object(Bucket=bucket, Key=key, Body=b"ok")
        s3.delete_object(Bucket=bucket, Key=key)
    except NoCredentialsError:
        raise TrackingError(f"{label}: no AWS credentials found (environment, ~/.aws or an "
                            "instance role)") from None
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise TrackingError(f"{label}: bucket does not exist") from None
        if code in ("403", "AccessDenied", "Forbidden", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch"):
            raise TrackingError(f"{label}: access denied (check the AWS credentials)") from None
        raise TrackingError(f"{label}: S3 error {code} ({_short(e)})") from None
    except BotoCoreError as e:
        raise TrackingError(f"{label}: S3 endpoint {endpoint} not reachable ({_short(e)})"
                            ) from None


def _check_proxy(location: str, label: str, tracking_uri: str | None) -> None:
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    sub = f"{location.rstrip('/')}/.tti_ray_preflight/{uuid.uuid4().hex}"
    try:
        repo = get_artifact_repository(sub, tracking_uri=tracking_uri)
        with tempfile.TemporaryDirectory() as d:
            probe = Path(d) / "probe.txt"
            probe.write_text("ok")
            repo.log_artifact(str(probe))
        with contextlib.suppress(Exception):  # some proxies refuse deletes; the write counts
            repo.delete_artifacts()
    except Exception as e:  # noqa: BLE001
        raise TrackingError(f"{label}: server artifact store not writable ({_short(e)})"
                            ) from None


# -- a fresh SQLite store without minutes of migrations ------------------------------------------
def _cache_dir() -> Path:
    root = os.environ.get("TTI_RAY_CACHE") or Path.home() / ".cache" / "tti_ray"
    return Path(root) / "mlflow"


def ensure_sqlite_store(uri: str) -> None:
    """Create the SQLite store from a cached, already-migrated empty database.

    MLflow builds a new SQLite store by running every schema migration (≈5 s idle, 20 s on a
    busy machine). The first call per MLflow version does that once into the cache; later
    stores are copies whose default experiment (id 0, unused by tti_ray) is pointed next to
    the new database. Any problem falls back to MLflow's own initialisation."""
    path = Path(uri[len("sqlite:///"):])
    if path.exists() or str(path) in ("", ":memory:"):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrackingError(f"tracking store {uri}: cannot create {path.parent} "
                            f"({e.strerror})") from None
    try:
        import mlflow

        template = _cache_dir() / f"empty-{mlflow.__version__}.db"
        if not template.exists():
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = template.with_name(f"{template.stem}.{os.getpid()}.tmp.db")
            tmp.unlink(missing_ok=True)
            quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic")]
            levels = [lg.level for lg in quiet]
            for lg in quiet:  # "Creating initial MLflow database tables": not the user's concern
                lg.setLevel(logging.WARNING)
            try:
                store = SqlAlchemyStore(f"sqlite:///{tmp}", str(tmp.parent / "unused"))
                store.engine.dispose()
            finally:
                for lg, lvl in zip(quiet, levels, strict=True):
                    lg.setLevel(lvl)
            os.replace(tmp, template)
        tmp_target = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp_target)
        con = sqlite3.connect(tmp_target)
        try:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                        ((path.parent / "mlartifacts" / "0").as_uri(),))
            con.commit()
        finally:
            con.close()
        if path.exists():
            tmp_target.unlink()
        else:
            os.replace(tmp_target, path)
    except Exception:  # noqa: BLE001 - MLflow will initialise the file itself
        return
