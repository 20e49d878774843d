"""Real processes for tracking tests: an S3 endpoint (moto's ``ThreadedMotoServer``), an MLflow
server (``python -m tti_ray.tracking serve``) proxying artifacts to it, a TCP proxy that can play
dead, and one small sweep logged to the server that several tests read back.

Fake credentials are planted in the environment *and* in the run config; the tests check that
none of them reaches a param, tag or artifact.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.sweep.conftest import ROOT, SMALL_BASE, write_space

BUCKET = "tti-test"
# fake, but shaped like the real thing, so pattern-based and literal redaction are both tested
FAKE_KEY_ID = "AKIAFAKETESTKEY12345"
FAKE_SECRET = "fAkE/SeCrEt+K3yForTests0123456789abcdEF"[:40].ljust(40, "Q")
FAKE_TOKEN = "FakeSessionToken-7f3a9c2e51d84b6fa0c9"
FAKE_PASSWORD = "hunter2-but-longer-9z"
# planted in the run config, where no credential belongs (bundled data ignores these fields)
CONFIG_KEY_ID = "AKIACONFIGPLANTED999"
CONFIG_SECRET = "cOnFiG/PlAnTeD+SecretValue0987654321XyZw"
SECRETS = [FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN, FAKE_PASSWORD, CONFIG_KEY_ID, CONFIG_SECRET]
assert len(FAKE_SECRET) == 40 and len(CONFIG_SECRET) == 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def fake_aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": FAKE_TOKEN,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "MLFLOW_TRACKING_USERNAME": "tti-tester",
        "MLFLOW_TRACKING_PASSWORD": FAKE_PASSWORD,
    }


def planted_base() -> dict:
    return {**SMALL_BASE, "data": {"hf_dataset": CONFIG_KEY_ID, "hf_text_field": CONFIG_SECRET}}


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(extra or {})}
    return env


class S3:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                       Prefix=prefix)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def s3():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3(f"http://127.0.0.1:{port}")
    s3.client().create_bucket(Bucket=BUCKET)
    yield s3
    server.stop()


@pytest.fixture(scope="session")
def aws_env(s3):
    """Fake AWS + MLflow credentials in this process's environment (and its children's)."""
    saved = {k: os.environ.get(k) for k in fake_aws_env(s3.endpoint)}
    os.environ.update(fake_aws_env(s3.endpoint))
    yield fake_aws_env(s3.endpoint)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class MlflowServer:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tti_ray.tracking", "serve",
               "--backend-store", f"sqlite:///{self.root / 'server.db'}",
               "--artifact-root", f"s3://{BUCKET}/server", "--port", str(self.port),
               "--workers", "1"]
        self.log = (self.root / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"{self.url}/health", proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(30)
        self.proc = None

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.url)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, aws_env):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"), free_port())
    server.start()
    yield server
    server.stop()


class TcpProxy:
    """127.0.0.1 port forwarder that can play dead (refuses connections, drops open ones)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        if self._listener is not None:
            return
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(32)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            try:  # wakes the accept() thread; close() alone would leave the port listening
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass
            self._conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while self._listener is ls:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            if self._listener is not ls:
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 1.0)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture
def proxy(mlflow_server):
    p = TcpProxy(mlflow_server.port)
    yield p
    p.down()


# -- one sweep logged to the server, shared by the server and browser tests ----------------------
class ServedSweep:
    def __init__(self, out: Path, result: subprocess.CompletedProcess, server: MlflowServer,
                 s3: S3) -> None:
        self.out, self.result, self.server, self.s3 = out, result, server, s3
        self.client = server.client()
        self.experiment = self.client.get_experiment_by_name("tracked_sweep")
        runs = self.client.search_runs([self.experiment.experiment_id], max_results=100)
        self.parent = next(r for r in runs if r.data.tags.get("tti_ray.role") == "sweep")
        self.children = [r for r in runs if r.data.tags.get("tti_ray.role") == "trial"]


@pytest.fixture(scope="session")
def served_sweep(tmp_path_factory, mlflow_server, s3):
    tmp = tmp_path_factory.mktemp("served_sweep")
    space = write_space(tmp / "space.yaml", name="tracked_sweep", base=planted_base(),
                        budget={"trials": 2})
    out = tmp / "exp"
    cmd = [sys.executable, "-m", "tti_ray.sweep", str(space), "--out", str(out), "--num-cpus", "2",
           "--tracking-uri", mlflow_server.url, "--artifact-store", f"s3://{BUCKET}/sweeps"]
    r = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    return ServedSweep(out, r, mlflow_server, s3)


def have_chromium() -> bool:
    return Path("/usr/bin/chromium").exists() or shutil.which("chromium") is not None
