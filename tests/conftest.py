"""Shared fixtures. Keep each one small and documented; add yours below with a short edit."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_bucket(tmp_path_factory):
    """A real S3 API: ``moto_server`` on a free loopback port, with one bucket. Yields ``"s3://<bucket>"``.

    Sets the standard AWS environment (``AWS_ENDPOINT_URL``, keys ``testing``, region ``us-east-1``) for the
    whole session, points ``SRCAL_CACHE_DIR`` at a temporary directory, and kills the server at the end.
    Tests should write under their own prefix (e.g. ``f"{s3_bucket}/{request.node.name}"``).
    """
    boto3 = pytest.importorskip("boto3")
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip(f"moto_server not found next to {sys.executable}; pip install 'moto[server]'")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:  # connection refused while the server starts; HTTPError is an OSError too
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {endpoint} (see {log.name})")
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # Isolate from whatever profile the developer has configured.
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.mktemp("aws") / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "config"),
        "SRCAL_CACHE_DIR": str(tmp_path_factory.mktemp("srcal-cache")),
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(k, raising=False)
    bucket = "srcal-test"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}"
    finally:
        mp.undo()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
