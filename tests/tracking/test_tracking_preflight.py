"""Preflight: an unusable tracking store or artifact location stops the CLI before any trial
starts, with exit code 2 and one line naming what is unreachable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tti_ray.tracking import TrackingConfig, TrackingError, preflight, resolve_tracking
from tti_ray.tracking.serve import server_command

from .conftest import BUCKET, ROOT, SMALL_BASE, free_port, subprocess_env, write_space


def run_cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=subprocess_env(env),
                          capture_output=True, text=True, timeout=300,
                          check=False)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-2000:])
    return lines[0]


def test_sweep_exits_2_when_the_tracking_server_is_down(tmp_path):
    port = free_port()  # nothing listens here
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "exp"
    r = run_cli("tti_ray.sweep", str(space), "--out", str(out), "--num-cpus", "2",
                "--tracking-uri", f"http://127.0.0.1:{port}")
    line = one_line_error(r)
    assert line.startswith(f"tti_ray.sweep: error: --tracking-uri http://127.0.0.1:{port}: "
                           "tracking server not reachable (")
    assert "Connection refused" in line
    assert not (out / "trials_state.json").exists() and not (out / "tune").exists()


def test_sweep_exits_2_when_the_bucket_is_missing(tmp_path, aws_env):
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "exp"
    r = run_cli("tti_ray.sweep", str(space), "--out", str(out), "--num-cpus", "2",
                "--artifact-store", "s3://missing-bucket/prefix", env=aws_env)
    line = one_line_error(r)
    assert line == ("tti_ray.sweep: error: --artifact-store s3://missing-bucket/prefix: "
                    "bucket does not exist")
    assert not (out / "tune").exists()


def test_train_exits_2_when_the_tracking_server_is_down(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL_BASE, "name": "pf"}))
    port = free_port()
    r = run_cli("tti_ray.train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
                "--tracking-uri", f"http://127.0.0.1:{port}")
    line = one_line_error(r)
    assert f"--tracking-uri http://127.0.0.1:{port}: tracking server not reachable" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# -- in-process checks (no CLI start-up cost) ----------------------------------------------------
def _tc(tmp_path, **kw) -> TrackingConfig:
    return resolve_tracking(exp_dir=tmp_path, experiment_name="pf", **kw)


def test_s3_endpoint_down_and_existing_bucket(tmp_path, aws_env, s3, monkeypatch):
    ok = _tc(tmp_path, tracking_uri=None, artifact_store=f"s3://{BUCKET}/pf")
    assert preflight(ok)  # bucket exists, put/delete works: experiment id returned
    assert not [k for k in s3.keys("pf/") if ".tti_ray_preflight" in k]  # probe cleaned up
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    bad = _tc(tmp_path / "b", tracking_uri=None, artifact_store=f"s3://{BUCKET}/pf")
    with pytest.raises(TrackingError, match=r"^--artifact-store s3://tti-test/pf: S3 endpoint "
                                            r"http://127\.0\.0\.1:\d+ not reachable"):
        preflight(bad)


def test_credentials_in_the_uri_are_refused_without_echoing_them(tmp_path):
    with pytest.raises(TrackingError) as e:
        _tc(tmp_path, tracking_uri="http://bob:hunter2@host:5000", artifact_store=None)
    assert "hunter2" not in str(e.value) and "MLFLOW_TRACKING_PASSWORD" in str(e.value)


def test_defaults_and_flags_resolve(tmp_path):
    tc = _tc(tmp_path, tracking_uri=None, artifact_store=None)
    assert tc.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tc.artifact_location == (tmp_path / "mlartifacts").as_uri()
    tc = _tc(tmp_path, tracking_uri="http://h:5000", artifact_store=None)
    assert tc.artifact_location is None  # the server's own artifact root
    assert _tc(tmp_path, tracking_uri=None, artifact_store=None, enabled=False) is None
    with pytest.raises(TrackingError, match="unsupported tracking URI scheme"):
        _tc(tmp_path, tracking_uri="ftp://h/x", artifact_store=None)


def test_serve_command_binds_loopback_and_proxies_artifacts(tmp_path, aws_env):
    cmd = server_command(backend_store="sqlite:///m.db", artifact_root=f"s3://{BUCKET}/x",
                         host="127.0.0.1", port=5001, workers=1, serve_artifacts=True, extra=[])
    assert cmd[1:] == ["server", "--backend-store-uri", f"sqlite:///{Path.cwd() / 'm.db'}",
                       "--host", "127.0.0.1", "--port", "5001", "--workers", "1",
                       "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/x"]
    r = run_cli("tti_ray.tracking", "serve", "--artifact-root", "s3://missing-bucket",
                "--backend-store", f"sqlite:///{tmp_path / 's.db'}", "--port", str(free_port()),
                env=aws_env)
    assert one_line_error(r) == ("tti_ray.tracking: error: --artifact-root s3://missing-bucket: "
                                 "bucket does not exist")


def test_local_artifact_check_decodes_the_file_uri(tmp_path):
    """``Path.as_uri`` writes ``+`` as %2B; the write check must probe the real directory, not
    create a stray ``a%2Bb`` next to it."""
    from tti_ray.tracking.config import check_artifact_location

    real = tmp_path / "tpe+mo_asha" / "mlartifacts"
    check_artifact_location(real.as_uri(), "--artifact-store")
    assert real.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tpe+mo_asha"]
