"""The Ray executor on a local Ray (one session for the module, 2 CPUs, loopback only):
the same database as the local executor, layer by layer and model by model; worker deaths
retried; a model that fails every retry reported and absent; no socket beyond 127.0.0.1."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from headgraph.ingest.manifest import fleet_items
from headgraph.ingest.pipeline import ingest, ingest_fleet
from headgraph.ingest.ray_executor import RayExecutor
from headgraph.toy import checkpoint_steps

TOY_FLEET = [f"toy@{s}" for s in checkpoint_steps()[:-1]] + ["toy"]
SMALL_RANDOM = "random:L3H4D64V50"


# -- helpers (also used by test_ray_cluster.py) --------------------------------------------

def model_rows(db: Path, name: str) -> dict[str, list[tuple]]:
    """Every row a model has, in stored order, without ids and timestamps."""
    con = duckdb.connect(str(db), read_only=True)
    (mid,) = con.execute("SELECT model_id FROM models WHERE name = ?", [name]).fetchone()
    rows = {"models": con.execute("SELECT * EXCLUDE (model_id, ingested_at) FROM models "
                                  "WHERE model_id = ?", [mid]).fetchall()}
    for table in ("nodes", "edges", "virtual_heads"):
        rows[table] = con.execute(f"SELECT * EXCLUDE (model_id) FROM {table} "
                                  "WHERE model_id = ? ORDER BY rowid", [mid]).fetchall()
    con.close()
    return rows


def database_rows(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    names = sorted(r[0] for r in con.execute("SELECT name FROM models").fetchall())
    baselines = sorted(con.execute("SELECT * FROM baselines").fetchall())
    con.close()
    return {"baselines": baselines, **{n: model_rows(db, n) for n in names}}


def _descendants(roots: set[int]) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _pgid_members(pgid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.add(int(entry))
            except OSError:
                continue
    return out


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").split("%")[0]
    if host in ("*", "0.0.0.0", "::"):
        return False
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def ray_sockets(pids: set[int]) -> list[tuple[str, str, str, str]]:
    """(state, local, peer, process) of every TCP/UDP socket that ``pids`` hold (``ss``)."""
    out = []
    for flag in ("-t", "-u"):
        text = subprocess.run(["ss", flag, "-a", "-n", "-p", "-H"], capture_output=True,
                              text=True, check=True).stdout
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 6 or "pid=" not in fields[5]:
                continue
            owners = {int(p.split(",")[0]) for p in fields[5].split("pid=")[1:]}
            if owners & pids:
                out.append((fields[0], fields[3], fields[4], fields[5]))
    return out


def assert_loopback_only(pids: set[int]) -> None:
    sockets = ray_sockets(pids)
    assert any(s[0] == "LISTEN" for s in sockets), "no Ray listener found: check is vacuous"
    beyond = [s for s in sockets
              if not _is_loopback(s[1]) or (not s[2].endswith(":*") and not _is_loopback(s[2]))]
    assert not beyond, f"Ray sockets beyond loopback: {beyond}"


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def executor():
    """One local Ray for the module (loopback, 2 CPUs), shut down at its end."""
    ex = RayExecutor(num_cpus=2).start()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def local_toy_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("serial") / "serial.duckdb"
    for source in TOY_FLEET:
        ingest(source, db)
    return db


# -- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["toy", SMALL_RANDOM])
def test_ray_layer_tasks_write_the_same_edges_as_local(executor: RayExecutor, tmp_path: Path,
                                                       source: str):
    local, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    ingest(source, local)
    report = ingest(source, ray_db, executor=executor)
    assert report.n_edges > 0
    assert database_rows(ray_db) == database_rows(local)


def test_a_toy_fleet_through_ray_equals_ingesting_one_by_one(executor: RayExecutor,
                                                             tmp_path: Path,
                                                             local_toy_fleet: Path):
    db = tmp_path / "fleet.duckdb"
    report = ingest_fleet(fleet_items(TOY_FLEET), db, executor=executor)
    assert not report.failed and len(report.stored) == len(TOY_FLEET) == 8
    assert database_rows(db) == database_rows(local_toy_fleet)


def test_a_worker_killed_mid_layer_task_is_retried(executor: RayExecutor, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    marker = tmp_path / "died"
    monkeypatch.setenv("HEADGRAPH_FAULT", f"worker_exit_once:{marker}")
    ray_db, local = tmp_path / "ray.duckdb", tmp_path / "local.duckdb"
    ingest(SMALL_RANDOM, ray_db, executor=executor)
    assert marker.read_text().startswith("layer")  # a worker did die mid-task
    monkeypatch.delenv("HEADGRAPH_FAULT")
    ingest(SMALL_RANDOM, local)
    assert database_rows(ray_db) == database_rows(local)


def test_a_worker_killed_mid_model_task_is_retried(executor: RayExecutor, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   local_toy_fleet: Path):
    marker = tmp_path / "died"
    monkeypatch.setenv("HEADGRAPH_FAULT", f"worker_exit_once:{marker}")
    db = tmp_path / "fleet.duckdb"
    report = ingest_fleet(fleet_items(TOY_FLEET[:3]), db, executor=executor)
    assert marker.read_text().startswith("toy@")
    assert not report.failed
    expected = database_rows(local_toy_fleet)
    got = database_rows(db)
    assert got["baselines"] == expected["baselines"]
    assert {n: got[n] for n in ("toy@0", "toy@1000", "toy@1400")} == \
        {n: expected[n] for n in ("toy@0", "toy@1000", "toy@1400")}


@pytest.mark.parametrize("fault", ["task_fail", "worker_exit"])
def test_a_model_failing_every_retry_is_reported_and_leaves_nothing(
        executor: RayExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        local_toy_fleet: Path, fault: str):
    monkeypatch.setenv("HEADGRAPH_FAULT", f"{fault}:toy@1000")
    db = tmp_path / "fleet.duckdb"
    with RayExecutor(max_retries=1) as retry_once:  # joins the module's session
        report = ingest_fleet(fleet_items(["toy@0", "toy@1000", "toy@1400"]), db,
                              executor=retry_once)
    (failed,) = report.failed
    assert failed.name == "toy@1000"
    assert ("injected failure" if fault == "task_fail" else "worker died") in failed.error
    got, expected = database_rows(db), database_rows(local_toy_fleet)
    assert set(got) == {"baselines", "toy@0", "toy@1400"}
    assert got["toy@0"] == expected["toy@0"] and got["toy@1400"] == expected["toy@1400"]


def test_a_local_ray_listens_and_talks_only_on_loopback(executor: RayExecutor):
    """Last in the module: the session, its workers and their connections are all up."""
    assert executor.workers() == 2
    assert_loopback_only(_descendants({os.getpid()}))
