"""Hostile clients against a real ``headgraph serve`` (a subprocess, real sockets), each
while a well-behaved client keeps polling: every attack of RELIABILITY.md's availability
table in a reduced form. For each, the polling client is answered within
:data:`ANSWER_S` every time, the attack gets a coded error or a bounded answer, and the
server's resident memory afterwards is within 20% of what it was before.

The polling client asks ``/healthz`` and a feeders query by turns over one keep-alive
connection (:class:`Poller`). The server runs with short timeouts (:data:`SETTINGS`) so
the suite takes seconds per attack; the defaults are longer, the mechanisms the same.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import benchmark_module, hold_for_writing, said, waiting_writer, write_briefly

from headgraph.attribution.importer import import_graph
from headgraph.attribution.synth import SynthSpec, graph_document

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ANSWER_S = 1.0  # the polling client is always answered within this
GROWTH = 1.20  # the server's RSS after an attack, at most this times before
README_QUERY = ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) '
                '{ source { name } score } } }')
SETTINGS = {"client_timeout_s": 2, "max_wait_s": 2, "max_query_seconds": 3,
            "max_response_bytes": 5_000_000, "keep_alive_s": 5}
J = {"content-type": "application/json"}


lt = benchmark_module("load_test")
fan_out_document = benchmark_module("hostile_load").fan_out_document


def codes(body: dict) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


# --- the polling client ----------------------------------------------------------------

@dataclass
class Poller:
    """A well-behaved client asking ``/healthz`` and :data:`README_QUERY` by turns, every
    ``every`` seconds, until stopped; ``graphql=False`` asks only routes that need no
    database answer (for a stalled database). ``locked_ok``: a 503 DATABASE_LOCKED (a
    writer has the file) counts as an answer."""

    url: str
    graphql: bool = True
    locked_ok: bool = False
    every: float = 0.05
    answers: list[tuple[float, bool, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            turn = 0
            while not self._stop.is_set():
                turn += 1
                t = time.perf_counter()
                try:
                    ok, what = self._ask(client, turn)
                except httpx.HTTPError as exc:
                    ok, what = False, f"{type(exc).__name__}: {exc}"
                self.answers.append((time.perf_counter() - t, ok, what))
                self._stop.wait(self.every)

    def _ask(self, client: httpx.Client, turn: int) -> tuple[bool, str]:
        if not self.graphql:
            path = ("/healthz", "/schema.graphql", "/")[turn % 3]
            r = client.get(path)
            return r.status_code == 200, f"{path} {r.status_code}"
        if turn % 2:
            r = client.get("/healthz")
            body = r.json()
            fine = {"ok", "locked"} if self.locked_ok else {"ok"}
            return r.status_code == 200 and body.get("database") in fine, f"healthz {body}"
        r = client.post("/graphql", json={"query": README_QUERY})
        body = r.json()
        if self.locked_ok and r.status_code == 503 and codes(body) == ["DATABASE_LOCKED"]:
            return True, "locked"
        ok = r.status_code == 200 and "errors" not in body \
            and len(body["data"]["node"]["feeders"]) == 3
        return ok, f"graphql {r.status_code} {r.text[:200]}"

    def check(self) -> str:
        """Every poll answered, well and in time; a summary line."""
        assert len(self.answers) >= 5, self.answers
        slow = [a for a in self.answers if a[0] >= ANSWER_S]
        bad = [a for a in self.answers if not a[1]]
        assert not slow and not bad, (slow[:5], bad[:5])
        worst = max(a[0] for a in self.answers)
        return f"{len(self.answers)} polls, slowest {worst * 1000:.0f} ms"


# --- the server under attack ------------------------------------------------------------

@pytest.fixture(scope="module")
def store(toy_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy; 'mid', a random model of 24,000 edges (its JSON export is 3.3 MB); an
    attribution graph of 100,000 links ('big', 8.6 MB of JSON: more than a loopback
    socket's buffers hold, so a client that does not read stalls the server's writes) and
    one whose metadata is 1 MB ('heavy')."""
    from headgraph.ingest.pipeline import ingest

    folder = tmp_path_factory.mktemp("hostile_clients")
    db = folder / "toy.duckdb"
    shutil.copy(toy_db, db)
    ingest("random:L8H16D128V500,ctx=64", db, name="mid")
    big = graph_document(SynthSpec(n_links=100_000, n_features=1000, seed=3, slug="big",
                                   scan="toy"))
    heavy = graph_document(SynthSpec(n_links=200, n_features=20, seed=4, slug="heavy",
                                     scan="toy"))
    heavy["metadata"]["notes"] = "x" * 1_000_000
    for name, doc in (("big", big), ("heavy", heavy)):
        (folder / f"{name}.json").write_text(json.dumps(doc))
        import_graph(folder / f"{name}.json", db)
    return db


@pytest.fixture(scope="module")
def served(store: Path) -> Iterator[Any]:
    with lt.ServerProcess(store, SETTINGS, max_files=192) as server:
        warm_up(server)
        yield server


def warm_up(server: Any) -> None:
    """Ask every route the attacks use once, so that caches fill before RSS is read."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            client.post("/graphql", json={"query": README_QUERY})
            client.get("/graphs/big.json").raise_for_status()
            client.get("/graphs/heavy.json?node_threshold=0.5").raise_for_status()
            client.get("/export/mid.json").raise_for_status()
            client.post("/graphql", json={"query": '{ a: attributionGraph(slug: "heavy") '
                                                   '{ metadata } }'})
            client.post("/graphql", json={"query": fan_out(4)})


@dataclass
class Attack:
    """What one attack left: its own outcome lines, for the report."""

    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


def under_attack(server: Any, attack: Callable[[Attack], None], *,
                 poller: Poller | None = None, settle_s: float = 1.0,
                 rehearse: bool = False) -> Attack:
    """Run ``attack`` while a :class:`Poller` polls; check the poller, the server's RSS
    and that it is alive after. ``rehearse``: run the attack once before (on a server
    fresh for it, so that the memory its routes take once, code and caches, is in the
    reference)."""
    if rehearse:
        attack(Attack())
        time.sleep(settle_s)
    before = server.rss()
    outcome = Attack()
    with poller or Poller(server.url) as poll:
        attack(outcome)
    time.sleep(settle_s)
    after = server.rss()
    summary = poll.check()
    assert server.alive(), server.log()[-3000:]
    assert after <= GROWTH * before, (before >> 20, after >> 20, outcome.lines)
    print(f"{summary}; RSS {before >> 20} -> {after >> 20} MB; " + "; ".join(outcome.lines))
    return outcome


def raw_socket(server: Any, data: bytes = b"", timeout: float = 30) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, at once
    sock.settimeout(timeout)
    sock.connect((server.host, server.port))
    if data:
        sock.sendall(data)
    return sock


def let_go(server: Any, socks: list[socket.socket], within: float) -> bool:
    """Whether the server process holds none of these connections any more (its side
    closed or aborted; what the kernel still has to deliver is not the server's) within
    ``within`` seconds."""
    import psutil

    ports = {s.getsockname()[1] for s in socks}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        held = [c for c in psutil.Process(server.pid).net_connections("tcp")
                if c.raddr and c.raddr.port in ports]
        if not held:
            return True
        time.sleep(0.2)
    return False


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes (or resets) ``sock`` within ``within`` seconds, reading
    and dropping whatever it sent."""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except TimeoutError:
            continue
        except OSError:  # reset
            return True
    return False


def get_head(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# --- 1. fan-out documents ---------------------------------------------------------------

def fan_out(levels: int, top: int | None = None) -> str:
    """Each Node level asks feeders and readers, each Edge level source and target, one
    fragment per level: 4 levels on the toy were 8 million values."""
    return fan_out_document("toy", "L1H2", levels, top)


def test_fan_out_documents_are_refused_before_they_run(served: Any):
    def attack(out: Attack) -> None:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            for levels, top in ((4, None), (4, 1000), (3, 100)):
                t = time.perf_counter()
                r = client.post("/graphql", json={"query": fan_out(levels, top)})
                took = time.perf_counter() - t
                assert r.status_code == 200 and codes(r.json()) == ["LIMIT_EXCEEDED"], r.text
                assert "max_cost" in r.json()["errors"][0]["message"] and took < ANSWER_S
                out.say(f"fan-out {levels} levels top {top}: LIMIT_EXCEEDED in "
                        f"{took * 1000:.0f} ms")
            # the same from a page of another site, as a GET: not even planned
            r = client.get("/graphql", params={"query": fan_out(4)},
                           headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
            assert r.status_code == 403 and codes(r.json()) == ["BAD_INPUT"], r.text
            out.say("cross-site GET: 403")

    under_attack(served, attack)


# --- 2. max_query_seconds holds, and always answers JSON ---------------------------------

HEAVY = ('{ model(name: "mid") { heads { name feeders(kind: K, top: 45) { score source { '
         'name feeders(kind: V, top: 5) { score } } } } } }')
"""A query under max_cost (about 92,000) that takes over 2 s to answer: 128 heads, their 45
strongest keys, and those sources' 5 strongest values (685 KB of JSON)."""


def test_max_query_seconds_stops_work_on_the_event_loop_and_answers_json(store: Path,
                                                                          tmp_path: Path):
    """A query the cost admits but that runs past its deadline is stopped there (within
    10% and a small constant), answered as JSON LIMIT_EXCEEDED, while the polling client
    is answered; the server's memory after is what it was. (A fan-out with the cost check
    off, millions of values: benchmarks/bench_deadline.py.)"""
    db = tmp_path / "deadline.duckdb"
    shutil.copy(store, db)
    budget = 0.5
    with lt.ServerProcess(db, {**SETTINGS, "max_query_seconds": budget}) as server:
        warm_up_small(server)

        def attack(out: Attack) -> None:
            for _ in range(3):
                t = time.perf_counter()
                r = httpx.post(f"{server.url}/graphql", json={"query": HEAVY}, timeout=60)
                took = time.perf_counter() - t
                assert r.headers["content-type"] == "application/json", r.text[:300]
                assert r.status_code == 200 and codes(r.json()) == ["LIMIT_EXCEEDED"], r.text
                assert "max_query_seconds" in r.json()["errors"][0]["message"]
                assert took <= 1.1 * budget + 1.0, took  # (a small constant on a quiet machine)
                out.say(f"a 2-second query: LIMIT_EXCEEDED after {took:.2f} s "
                        f"(limit {budget:g} s)")

        under_attack(server, attack, settle_s=1.0, rehearse=True)


def warm_up_small(server: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            client.post("/graphql", json={"query": README_QUERY})


# --- 3 and 6. clients that do not read what they asked for ------------------------------

@pytest.mark.xfail(strict=True, reason="known miss: six non-reading downloads of a "
                   "100,000-link graph leave the server's RSS 25-35% larger (355 -> 459 MB, "
                   "not returned by malloc_trim); the goal is 20%")
def test_six_graph_readers_that_never_read_hold_no_database_turn(served: Any, store: Path):
    def attack(out: Attack) -> None:
        socks = [raw_socket(served, get_head("/graphs/big.json")) for _ in range(6)]
        time.sleep(0.5)
        # a writer gets the file while they are connected: no turn, no session is held
        assert write_briefly(store, wait_s=10) == 0
        out.say("a writer got the file while six non-readers were connected")
        assert let_go(served, socks, SETTINGS["client_timeout_s"] + 3)
        for s in socks:
            s.close()
        out.say(f"the six were closed within client_timeout_s "
                f"({SETTINGS['client_timeout_s']} s) of their stall")

    under_attack(served, attack, poller=Poller(served.url, locked_ok=True))


def test_eight_exports_that_never_read_leave_room_for_a_ninth_and_for_a_writer(
        served: Any, store: Path):
    def attack(out: Attack) -> None:
        socks = [raw_socket(served, get_head("/export/mid.json")) for _ in range(8)]
        time.sleep(0.5)
        t = time.perf_counter()
        r = httpx.get(f"{served.url}/export/mid.json", timeout=30)
        took = time.perf_counter() - t
        # the ninth waits at most max_wait_s for a slot: it gets it, or 503 SERVER_BUSY
        assert (r.status_code == 200 and json.loads(r.content)["directed"]) or (
            r.status_code == 503 and codes(r.json()) == ["SERVER_BUSY"]), r.text[:300]
        assert took < SETTINGS["max_wait_s"] + 3
        out.say(f"ninth export: {r.status_code} after {took:.1f} s")
        t = time.perf_counter()
        assert write_briefly(store, wait_s=10) == 0  # the writer is not starved either
        out.say(f"a writer got the file in {time.perf_counter() - t:.1f} s")
        # each answer fits in the kernel's socket buffers: the server is done with it at
        # once, and closes the idle connection after keep_alive_s
        assert let_go(served, socks, SETTINGS["keep_alive_s"] + 3)
        for s in socks:
            s.close()
        out.say("the eight were let go")

    under_attack(served, attack, poller=Poller(served.url, locked_ok=True))


# --- 4. a PostgreSQL server that stalls ---------------------------------------------------

def test_a_stalled_postgresql_never_stops_the_event_loop(pg_server: str, tmp_path: Path):
    """The whole PostgreSQL server stopped (SIGSTOP to the postmaster and every backend)
    while the API holds pooled connections: routes that need no database answer at once,
    /healthz says so within a second, a query gets a coded error within its deadline, and
    all is answered again once PostgreSQL runs again."""
    import psutil
    from support import new_pg_database

    from headgraph.ingest.pipeline import ingest

    url = new_pg_database(pg_server, "hg_stall")
    ingest("toy", url)
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    postmaster = next(psutil.Process(c.pid) for c in psutil.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid)
    budget = 2.0
    with lt.ServerProcess(url, {**SETTINGS, "max_query_seconds": budget}) as server:
        warm_up_small(server)

        def attack(out: Attack) -> None:
            stopped = [postmaster, *postmaster.children(recursive=True)]
            for p in stopped:
                p.send_signal(signal.SIGSTOP)
            try:
                time.sleep(1.5)  # pooled connections now idle > 1 s: each is pinged first
                for _ in range(3):
                    t = time.perf_counter()
                    r = httpx.post(f"{server.url}/graphql", json={"query": README_QUERY},
                                   timeout=60)
                    took = time.perf_counter() - t
                    assert r.headers["content-type"] == "application/json"
                    assert set(codes(r.json())) <= {"LIMIT_EXCEEDED", "SERVER_BUSY"} \
                        and codes(r.json()), r.text
                    assert took <= 1.1 * budget + 1.5, took
                    out.say(f"a query while PostgreSQL was stopped: {codes(r.json())} after "
                            f"{took:.1f} s (limit {budget:g} s)")
                health = httpx.get(f"{server.url}/healthz", timeout=10).json()
                assert health["database"] in ("busy", "unresponsive"), health
                out.say(f"/healthz: {health['database']}")
            finally:
                for p in stopped:
                    p.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # answered again once it runs again
                r = httpx.post(f"{server.url}/graphql", json={"query": README_QUERY},
                               timeout=30)
                if r.status_code == 200 and "errors" not in r.json():
                    break
                time.sleep(0.5)
            assert r.status_code == 200 and "errors" not in r.json(), r.text
            out.say("answered again after SIGCONT")

        under_attack(server, attack, poller=Poller(server.url, graphql=False),
                     rehearse=False)


# --- 5. documents costly to validate ------------------------------------------------------

def test_documents_costly_to_validate_are_refused_cheaply(served: Any):
    def attack(out: Attack) -> None:
        def send(i: int, results: list) -> None:  # each text new: no cache helps
            query = ('{ node(model: "toy", name: "L1H2") { '
                     + f"feeders(kind: K, top: {i % 5 + 1}) {{ score }} " * 280 + "} }")
            t = time.perf_counter()
            r = httpx.post(f"{served.url}/graphql", json={"query": query}, timeout=60)
            results.append((time.perf_counter() - t, codes(r.json())))

        results: list = []
        threads = [threading.Thread(target=send, args=(i, results)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [c for _, c in results] == [["LIMIT_EXCEEDED"]] * 8, results
        out.say(f"8 documents repeating a field 280 times: LIMIT_EXCEEDED, slowest "
                f"{max(t for t, _ in results) * 1000:.0f} ms")

    under_attack(served, attack)


# --- 7. non-finite numbers stored in a graph -----------------------------------------------

def test_a_stored_nan_is_answered_as_json_and_as_a_coded_error(store: Path, tmp_path: Path):
    import duckdb

    db = tmp_path / "nan.duckdb"
    shutil.copy(store, db)
    with duckdb.connect(str(db)) as con:  # as an older import stored them
        gid = con.execute("SELECT graph_id FROM attribution_graphs WHERE slug = 'heavy'"
                          ).fetchone()[0]
        target = con.execute("SELECT target FROM attribution_links WHERE graph_id = ? AND "
                             "idx = 0", [gid]).fetchone()[0]
        center = con.execute("SELECT node_id FROM attribution_nodes WHERE graph_id = ? AND "
                             "nid = ?", [gid, target]).fetchone()[0]
        con.execute("UPDATE attribution_links SET weight = 'NaN'::DOUBLE WHERE graph_id = ? "
                    "AND idx < 5", [gid])
        con.execute("UPDATE attribution_links SET weight = 'Infinity'::DOUBLE WHERE "
                    "graph_id = ? AND idx = 5", [gid])
        con.execute("UPDATE attribution_links SET weight = 'NaN'::DOUBLE WHERE graph_id = ? "
                    "AND target = ?", [gid, target])
    with lt.ServerProcess(db, SETTINGS) as server:
        warm_up_small(server)

        def attack(out: Attack) -> None:
            r = httpx.get(f"{server.url}/graphs/heavy.json", timeout=30)
            doc = json.loads(r.content, parse_constant=lambda c: pytest.fail(f"bare {c}"))
            weights = [link["weight"] for link in doc["links"]]
            assert r.status_code == 200 and weights.count(None) >= 6
            out.say(f"/graphs: valid JSON, the {weights.count(None)} non-finite weights "
                    "as null")
            r = httpx.post(f"{server.url}/graphql", json={
                "query": 'query($n: String!) { attributionGraph(slug: "heavy") { slug '
                         'neighbourhood(node: $n, direction: IN) { links { weight } } } }',
                "variables": {"n": center}}, timeout=30)
            json.loads(r.content, parse_constant=lambda c: pytest.fail(f"bare {c}"))
            assert set(codes(r.json())) == {"DATABASE_ERROR"}, r.text[:500]
            assert "headgraph check" in r.json()["errors"][0]["message"]
            out.say(f"GraphQL: {len(codes(r.json()))} DATABASE_ERROR, never INTERNAL_ERROR")

        under_attack(server, attack, rehearse=True)
    check = subprocess.run([sys.executable, "-m", "headgraph.cli", "check", "--db", str(db)],
                           capture_output=True, text=True, timeout=120)
    said = " ".join((check.stdout + check.stderr).split())  # the console wraps lines
    assert check.returncode != 0 and "with a NaN or infinite weight" in said, said


# --- 8. aliases over a large value ----------------------------------------------------------

def test_aliases_over_a_large_value_stop_at_max_response_bytes(served: Any):
    query = "{ " + " ".join(f'a{i}: attributionGraph(slug: "heavy") {{ metadata }}'
                            for i in range(30)) + " }"

    def attack(out: Attack) -> None:
        for _ in range(3):
            r = httpx.post(f"{served.url}/graphql", json={"query": query}, timeout=60)
            assert r.status_code == 200 and "LIMIT_EXCEEDED" in codes(r.json()), r.text[:300]
            assert len(r.content) < SETTINGS["max_response_bytes"]
        out.say(f"30 aliases of 1 MB metadata: LIMIT_EXCEEDED, {len(r.content):,} bytes")

    under_attack(served, attack)


# --- 9. a marker left by a killed writer -----------------------------------------------------

def test_a_marker_left_by_a_killed_writer_or_naming_a_live_pid_blocks_nothing(
        served: Any, store: Path):
    def attack(out: Attack) -> None:
        marker = store.with_name(store.name + ".write-pending")
        marker.write_text("1 0\n")  # PID 1 lives for ever; its marker holds no lock
        r = httpx.post(f"{served.url}/graphql", json={"query": README_QUERY}, timeout=10)
        assert r.status_code == 200 and "errors" not in r.json(), r.text
        out.say("a marker naming PID 1: ignored")
        holder = hold_for_writing(store)  # another writer has the file...
        try:
            waiting = waiting_writer(store)  # ...so this one waits, with its marker
            time.sleep(1.5)
            assert store.with_name(store.name + ".write-pending").exists()
            waiting.kill()  # and is killed: its marker stays behind
            waiting.wait(10)
        finally:
            holder.stdin.close()
            holder.wait(20)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = httpx.post(f"{served.url}/graphql", json={"query": README_QUERY}, timeout=10)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200 and "errors" not in r.json(), r.text
        out.say("a killed waiting writer's marker: answered normally again at once")
        marker.unlink(missing_ok=True)

    under_attack(served, attack, poller=Poller(served.url, locked_ok=True))


# --- 10. slowloris and idle connections ------------------------------------------------------

def test_idle_and_slowloris_connections_time_out_and_never_exhaust_the_files(served: Any):
    """The server may hold 128 connections (192 files less 64); 300 idle sockets and 20
    sending a header a byte at a time are closed, evicted or refused, and nobody else
    waits."""
    def attack(out: Attack) -> None:
        idle = []
        for _ in range(300):
            try:
                idle.append(raw_socket(served))
            except OSError:
                break
        slow = [raw_socket(served, b"GET /healthz HTTP/1.1\r\n") for _ in range(20)]
        start = time.monotonic()
        while time.monotonic() - start < SETTINGS["client_timeout_s"] + 2:
            for s in slow:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            time.sleep(0.3)
        gone = sum(closed_by_server(s, 3) for s in idle + slow)
        for s in idle + slow:
            s.close()
        assert gone == len(idle) + len(slow), (gone, len(idle) + len(slow))
        out.say(f"{len(idle)} idle and {len(slow)} slowloris sockets: all closed by the "
                "server")

    under_attack(served, attack)


# --- 11, 12. configs that lie, encoder-decoders, mixtures of experts -------------------------

def test_ingests_of_lying_configs_and_unscorable_models_fail_fast_beside_the_server(
        served: Any, store: Path, tmp_path: Path):
    import transformers as tf

    lying = tmp_path / "lying"
    cfg = tf.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=20, n_positions=8)
    tf.GPT2LMHeadModel(cfg).save_pretrained(lying)
    config = json.loads((lying / "config.json").read_text())
    (lying / "config.json").write_text(json.dumps({**config, "n_layer": 10**9}))
    mixtral = tmp_path / "mixtral"
    tf.MixtralForCausalLM(tf.MixtralConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=16)).save_pretrained(mixtral)

    def attack(out: Attack) -> None:
        for src, code in ((lying, "BAD_SOURCE"), (mixtral, "UNSUPPORTED_ARCHITECTURE")):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "headgraph.cli", "ingest", str(src),
                                "--db", str(store)], capture_output=True, text=True,
                               timeout=120, cwd=ROOT)
            lines = said(r.stdout + r.stderr)
            assert r.returncode == 2 and len(lines) == 1 and f"[{code}]" in lines[0], lines
            out.say(f"{src.name}: {code} in {time.perf_counter() - t:.1f} s")

    under_attack(served, attack, poller=Poller(served.url, locked_ok=True))


# --- 13-15. bodies and names that cannot be served -------------------------------------------

def test_hostile_bodies_and_names_get_quick_coded_refusals(served: Any):
    deep = b'{"query": "{ models { name } }", "variables": {"a": ' + b"[" * 100_000 \
        + b"]" * 100_000 + b"}}"
    names = ["..%2F..%2Fetc%2Fpasswd", "%2E%2E", "", "a%00b", "%0Aslug", "x" * 20_000,
             "%ED%A0%80"]

    def attack(out: Attack) -> None:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            r = client.post("/graphql", content=deep, headers=J)
            assert r.status_code in (400, 413) and codes(r.json()), r.text[:200]
            r = client.post("/graphql", content=b" " * 50_000_000, headers=J)
            assert r.status_code == 413 and codes(r.json()) == ["LIMIT_EXCEEDED"]
            out.say("JSON nested 100,000 deep and 50 MB of whitespace: refused")
            for name in names:
                r = client.get(f"/graphs/{name}.json")
                assert r.status_code in (400, 404, 414) and r.status_code != 500, (name, r.text)
                if r.headers.get("content-type") == "application/json":
                    assert set(codes(r.json())) <= {"BAD_INPUT", "GRAPH_NOT_FOUND"}, r.text
            out.say(f"{len(names)} unservable slugs: 4xx, coded")

    under_attack(served, attack)


# --- 16. the Host header ------------------------------------------------------------------------

def test_a_foreign_host_header_is_refused(served: Any):
    def attack(out: Attack) -> None:
        for host, ok in (("attacker.example", False), ("attacker.example:80", False),
                         (f"localhost:{served.port}", True), (f"127.0.0.1:{served.port}", True),
                         ("[::1]", True)):
            r = httpx.post(f"{served.url}/graphql", json={"query": README_QUERY},
                           headers={"host": host}, timeout=10)
            if ok:
                assert r.status_code == 200 and "errors" not in r.json(), (host, r.text)
            else:
                assert r.status_code == 400 and codes(r.json()) == ["BAD_INPUT"], (host, r.text)
        out.say("DNS-rebinding Host names refused, loopback names answered")

    under_attack(served, attack)
