"""Against a real Ray cluster: `ray start --head` on loopback in its own process group, joined
by the CLI with --ray-address (one model by layer tasks, and a fleet), then stopped.

Teardown signals the head's process group (the head, its raylet and the workers it forked),
as `ray stop --force` would, but only this cluster's: `ray stop` finds Ray processes by name,
so on a shared machine it would also kill other people's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_ray_executor import (
    _pgid_members,
    assert_loopback_only,
    database_rows,
)
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.ingest.pipeline import ingest
from headgraph.ingest.ray_executor import RayExecutor

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(pgid: int, grace: float = 2.0) -> None:
    """SIGTERM the head's process group, then SIGKILL what is left of it (gcs_server and
    raylet outlive SIGTERM; `ray stop --force` kills them the same way)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            alive = [p for p in _pgid_members(pgid) if _running(p)]
            if not alive:
                return
            time.sleep(0.2)


def _running(pid: int) -> bool:
    """Alive and not a zombie; a process that ended since it was listed is not running."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cluster():
    """HOST:PORT and process group of a 2-CPU Ray head on 127.0.0.1."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="hg-ray-", dir="/tmp")  # short: Ray's socket paths
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        env={**os.environ, **LOOPBACK_ENV}, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = head.communicate(timeout=120)
        if head.returncode:
            pytest.fail(f"ray start --head failed:\n{out}")
        yield f"127.0.0.1:{port}", head.pid
    finally:
        _stop_group(head.pid)
        shutil.rmtree(temp, ignore_errors=True)


def test_cli_joins_a_cluster_for_one_model_by_layer_tasks(cluster, tmp_path: Path):
    address, _ = cluster
    db, local = tmp_path / "cluster.duckdb", tmp_path / "local.duckdb"
    result = CliRunner().invoke(app, ["ingest", "random:L3H4D64V50", "--db", str(db),
                                      "--executor", "ray", "--ray-address", address])
    assert result.exit_code == 0, result.output
    ingest("random:L3H4D64V50", local)
    assert database_rows(db) == database_rows(local)


def test_cli_ingests_a_fleet_on_a_cluster(cluster, tmp_path: Path):
    address, _ = cluster
    db, local = tmp_path / "cluster.duckdb", tmp_path / "local.duckdb"
    result = CliRunner().invoke(app, ["ingest", "toy@0", "toy@1000", "toy", "--db", str(db),
                                      "--executor", "ray", "--ray-address", address])
    assert result.exit_code == 0, result.output
    assert "3 stored, 0 failed" in " ".join(result.output.split())
    for source in ("toy@0", "toy@1000", "toy"):
        ingest(source, local)
    assert database_rows(db) == database_rows(local)


def test_the_cluster_and_its_driver_stay_on_loopback(cluster):
    address, pgid = cluster
    with RayExecutor(address) as joined:
        assert joined.workers() == 2
        assert_loopback_only(_pgid_members(pgid) | {os.getpid()})
