"""Safe defaults of the server, over real HTTP: it binds 127.0.0.1, is read-only, sends no
CORS headers unless told, can require a bearer token, stops a request over its time
budget, refuses POST bodies that are not JSON, logs requests without their query text,
and documents every setting in README.md."""

from __future__ import annotations

import inspect
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest
from sqlalchemy import text
from support import Server, benchmark_module, write_briefly
from typer.testing import CliRunner

import headgraph.server as server_module
from headgraph.api.execute import Service
from headgraph.api.settings import SETTINGS, Settings, parse_pairs
from headgraph.cli import app as cli
from headgraph.errors import BadInputError, DatabaseError
from headgraph.server import create_app

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-of-32-characters-xx"
README_QUERY = ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) '
                '{ source { name } score } } }')
runner = CliRunner()


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


@pytest.fixture(scope="module")
def plain(toy_db: Path) -> Iterator[Server]:
    s = Server(create_app(toy_db))
    yield s
    s.stop()


# --- bind address -----------------------------------------------------------------------

def test_serve_defaults_to_loopback(toy_db: Path, monkeypatch: pytest.MonkeyPatch):
    assert inspect.signature(server_module.serve).parameters["host"].default == "127.0.0.1"
    seen: dict = {}
    monkeypatch.delenv("HEADGRAPH_AUTH_TOKEN", raising=False)
    monkeypatch.setattr(server_module, "serve", lambda db, **kw: seen.update(kw))
    r = runner.invoke(cli, ["serve", "--db", str(toy_db)])
    assert r.exit_code == 0, r.output
    assert seen["host"] == "127.0.0.1" and "auth_token" not in seen


def test_a_real_headgraph_serve_listens_on_loopback_only(toy_db: Path):
    with benchmark_module("load_test").ServerProcess(toy_db) as server:
        listening = [c for c in psutil.Process(server.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
        assert httpx.get(f"{server.url}/healthz").json()["database"] == "ok"


def test_serve_configures_uvicorn_guarded_and_without_its_access_log(
        toy_db: Path, monkeypatch: pytest.MonkeyPatch):
    import uvicorn

    from headgraph.api.connections import FD_RESERVE

    seen: list = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.append(self.config))
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda self: None)  # this process
    server_module.serve(toy_db, port=0, keep_alive_s=3, max_connections=10**9)
    (config,) = seen
    assert config.access_log is False  # it would log GET query strings: the queries
    assert config.log_config["loggers"]["headgraph"]["handlers"] == ["default"]
    assert config.timeout_keep_alive == 3
    assert config.http.__name__ == "GuardedH11"  # h11 with the connection guards
    import resource

    from headgraph.api.connections import connection_cap

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # raised to the hard limit by serve
    assert connection_cap(10**9) == soft - FD_RESERVE


# --- read-only --------------------------------------------------------------------------

def test_there_is_no_mutation_or_subscription(plain: Server):
    sdl = plain.client.get("/schema.graphql").text
    assert "type Mutation" not in sdl and "type Subscription" not in sdl
    body = plain.gql("mutation { x }")
    assert codes(body) == ["BAD_INPUT"]


def test_the_reader_cannot_write(toy_db: Path, tmp_path: Path):
    db = tmp_path / "ro.duckdb"
    shutil.copy(toy_db, db)
    service = Service(db)
    try:
        with service.reader().session() as session:
            for stmt in ("CREATE TABLE hack (i INTEGER)", "DELETE FROM edges",
                         "DROP TABLE edges", "INSERT INTO meta VALUES ('k', 'v')"):
                with pytest.raises(DatabaseError):
                    session.rows(text(stmt))
    finally:
        service.close()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM edges").fetchone()[0] > 0


# --- CORS -------------------------------------------------------------------------------

def test_no_cors_headers_unless_configured(plain: Server):
    origin = {"origin": "https://evil.example"}
    r = plain.client.post("/graphql", json={"query": "{ models { name } }"}, headers=origin)
    assert r.status_code == 200 and cors_headers(r) == {}
    r = plain.client.options("/graphql", headers={**origin,
                                                  "access-control-request-method": "POST"})
    assert r.status_code == 405 and cors_headers(r) == {}
    for path in ("/healthz", "/schema.graphql", "/", "/export/toy.dot"):
        assert cors_headers(plain.client.get(path, headers=origin)) == {}


def test_cors_answers_allowed_origins_only(toy_db: Path):
    s = Server(create_app(toy_db, Settings.of({"cors_origins": "https://lab.example.org, "
                                                               "http://localhost:3000/"})))
    try:
        ok = {"origin": "https://lab.example.org"}
        r = s.client.post("/graphql", json={"query": "{ models { name } }"}, headers=ok)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://lab.example.org"
        assert "Origin" in r.headers["vary"]
        assert "access-control-allow-credentials" not in r.headers
        pre = s.client.options("/graphql", headers={
            "origin": "http://localhost:3000", "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert set(pre.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        bad = {"origin": "https://evil.example"}
        r = s.client.post("/graphql", json={"query": "{ models { name } }"}, headers=bad)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        pre = s.client.options("/graphql", headers={**bad,
                                                    "access-control-request-method": "POST"})
        assert pre.status_code == 403 and codes(pre.json()) == ["BAD_INPUT"]
        assert "access-control-allow-origin" not in pre.headers
        r = s.client.post("/graphql", json={"query": "{ models { name } }"})  # no Origin
        assert "access-control-allow-origin" not in r.headers
    finally:
        s.stop()


def test_cors_star_allows_any_origin(toy_db: Path):
    s = Server(create_app(toy_db, Settings(cors_origins=("*",))))
    try:
        r = s.client.get("/healthz", headers={"origin": "https://anywhere.example"})
        assert r.headers["access-control-allow-origin"] == "*"
    finally:
        s.stop()


@pytest.mark.parametrize("bad", ["https://a.org/path", "ftp://a.org", "a.org", "https://",
                                 "https://a.org?x=1", "https://user@a.org"])
def test_cors_origins_must_be_origins(bad: str):
    with pytest.raises(BadInputError, match="cors_origins"):
        Settings.of({"cors_origins": bad})


# --- bearer token -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(toy_db: Path) -> Iterator[Server]:
    s = Server(create_app(toy_db, Settings(auth_token=TOKEN, cors_origins=("https://lab.org",))))
    yield s
    s.stop()


@pytest.mark.parametrize("header", [None, "", "Bearer", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                    "Bearer " + "x" * 10_000, f"{TOKEN}"])
def test_without_the_right_token_every_route_is_401(guarded: Server, header: str | None):
    headers = {} if header is None else {"authorization": header}
    for method, path in (("POST", "/graphql"), ("GET", "/graphql?query={models{name}}"),
                         ("GET", "/schema.graphql"), ("GET", "/"), ("GET", "/viewer/viewer.js"),
                         ("GET", "/export/toy.json"), ("GET", "/plot/toy/copying.png"),
                         ("GET", "/graphs/some-graph.json"),
                         ("GET", "/nope")):
        r = guarded.client.request(method, path, headers=headers,
                                   json={"query": "{ models { name } }"} if method == "POST"
                                   else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert codes(r.json()) == ["UNAUTHENTICATED"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text


def test_the_right_token_opens_every_route_and_healthz_needs_none(guarded: Server):
    auth = {"authorization": f"Bearer {TOKEN}"}
    body = guarded.gql(README_QUERY, headers=auth)
    assert "errors" not in body
    assert guarded.client.get("/graphql", params={"query": "{ models { name } }"},
                              headers={**auth, "authorization": f"bearer  {TOKEN}"}
                              ).status_code == 200  # scheme case and spaces as RFC 6750
    assert guarded.client.get("/schema.graphql", headers=auth).status_code == 200
    assert guarded.client.get("/export/toy.dot", headers=auth).status_code == 200
    assert guarded.client.get("/healthz").json()["database"] == "ok"


def test_preflight_needs_no_token_but_the_request_does(guarded: Server):
    pre = guarded.client.options("/graphql", headers={
        "origin": "https://lab.org", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})
    assert pre.status_code == 204
    r = guarded.client.post("/graphql", json={"query": "{ models { name } }"},
                            headers={"origin": "https://lab.org"})
    assert r.status_code == 401  # and the browser may read why:
    assert r.headers["access-control-allow-origin"] == "https://lab.org"


def test_the_token_reaches_the_settings_from_the_cli_and_the_environment(
        toy_db: Path, monkeypatch: pytest.MonkeyPatch):
    seen: list[dict] = []
    monkeypatch.setattr(server_module, "serve", lambda db, **kw: seen.append(kw))
    assert runner.invoke(cli, ["serve", "--db", str(toy_db), "--auth-token", TOKEN]
                         ).exit_code == 0
    assert runner.invoke(cli, ["serve", "--db", str(toy_db)],
                         env={"HEADGRAPH_AUTH_TOKEN": TOKEN}).exit_code == 0
    assert [kw["auth_token"] for kw in seen] == [TOKEN, TOKEN]


def test_weak_tokens_are_refused_before_serving(toy_db: Path):
    for weak in ("short", "has a space in it, 16+ chars", "é" * 20):
        r = runner.invoke(cli, ["serve", "--db", str(toy_db), "--auth-token", weak])
        assert r.exit_code == 2 and "error [BAD_INPUT]" in r.output and weak not in r.output
    assert TOKEN not in repr(Settings(auth_token=TOKEN))


# --- time budget ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_graph_operation_over_max_query_seconds_is_stopped(
        toy_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import headgraph.api.types as api_types

    db = tmp_path / "slow.duckdb"
    shutil.copy(toy_db, db)
    real = api_types.find_paths
    finished = []

    def slow_paths(*args, **kwargs):  # a path search that takes 3 s, in its worker thread
        time.sleep(3)
        out = real(*args, **kwargs)
        finished.append(time.monotonic())
        return out

    monkeypatch.setattr(api_types, "find_paths", slow_paths)
    s = Server(create_app(db, Settings(max_query_seconds=0.5)))
    try:
        t = time.monotonic()
        body = s.gql('{ models { name } model(name: "toy") { name paths(target: "L1H2") '
                     '{ score } } }')
        took = time.monotonic() - t
        assert took < 2.0, took
        assert codes(body) == ["LIMIT_EXCEEDED"] and body["errors"][0]["path"] == [
            "model", "paths"]
        assert "max_query_seconds" in body["errors"][0]["message"]
        assert body["data"] == {"models": [{"name": "toy"}], "model": None}
        assert "errors" not in s.gql(README_QUERY)  # the server answers on meanwhile
        # the abandoned search ends by itself and its connection is closed right after:
        # the file is free for a writer again
        assert write_briefly(db, wait_s=20) == 0, "the timed-out request kept the file"
        assert finished
    finally:
        s.stop()


def test_a_spent_budget_refuses_every_field(toy_db: Path):
    s = Server(create_app(toy_db, Settings(max_query_seconds=1e-9)))
    try:
        body = s.gql(README_QUERY)
        assert codes(body) == ["LIMIT_EXCEEDED"] and body["data"] is None  # nothing ran
    finally:
        s.stop()
    s = Server(create_app(toy_db, Settings(max_query_seconds=0)))  # 0: no limit
    try:
        assert "errors" not in s.gql(README_QUERY)
    finally:
        s.stop()


# --- content types ----------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/graphql",
                                          "application/jsonx", "text/json"])
def test_post_bodies_must_be_json(plain: Server, content_type: str | None):
    headers = {} if content_type is None else {"content-type": content_type}
    r = plain.client.post("/graphql", content=b'{"query": "{ models { name } }"}',
                          headers=headers)
    assert r.status_code == 415 and codes(r.json()) == ["BAD_INPUT"]


def test_json_with_a_charset_is_json(plain: Server):
    r = plain.client.post("/graphql", content=b'{"query": "{ models { name } }"}',
                          headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200 and r.json() == {"data": {"models": [{"name": "toy"}]}}


# --- request log ------------------------------------------------------------------------

def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "headgraph.access"]


def test_requests_are_logged_without_their_queries(plain: Server,
                                                   caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="headgraph.access")
    plain.gql('{ model(name: "MARKER-POST") { name } }')
    plain.client.get("/graphql", params={"query": '{ model(name: "MARKER-GET") { name } }'})
    plain.client.get("/healthz")
    lines = access_lines(caplog)
    assert any(re.fullmatch(r"POST '/graphql' 200 \d+\.\dms", line) for line in lines), lines
    assert any(line.startswith("GET '/graphql' 200 ") for line in lines)
    assert any(line.startswith("GET '/healthz' 200 ") for line in lines)
    assert not any("MARKER" in line for line in lines)


def test_log_queries_adds_them(toy_db: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="headgraph.access")
    s = Server(create_app(toy_db, Settings.of({"log_queries": "true", "auth_token": TOKEN})))
    try:
        s.gql('{ model(name: "MARKER-POST") { name } }',
              headers={"authorization": f"Bearer {TOKEN}"})
    finally:
        s.stop()
    lines = access_lines(caplog)
    assert any("POST '/graphql' 200" in line and "MARKER-POST" in line for line in lines)
    assert not any(TOKEN in line for line in lines)


# --- settings and their docs ------------------------------------------------------------

def test_new_settings_parse_from_the_command_line():
    s = Settings.of(parse_pairs(["max_query_seconds=2.5", "cors_origins=https://a.org,*",
                                 "log_queries=yes", f"auth_token={TOKEN}"]))
    assert (s.max_query_seconds, s.cors_origins, s.log_queries, s.auth_token) == (
        2.5, ("https://a.org", "*"), True, TOKEN)
    for bad in ({"max_query_seconds": "-1"}, {"max_query_seconds": "inf"},
                {"max_query_seconds": "soon"}, {"log_queries": "maybe"},
                {"auth_token": "x" * 15}, {"auth_token": 12345678901234567890}):
        with pytest.raises(BadInputError):
            Settings.of(bad)
    defaults = Settings()
    assert defaults.cors_origins == () and defaults.auth_token is None
    assert defaults.log_queries is False and defaults.max_query_seconds > 0


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert "### Server settings" in readme
    section = readme.split("### Server settings", 1)[1].split("\n#", 1)[0]
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in section]
    assert not missing, (f"settings missing from README.md's 'Server settings': {missing}; "
                         "add a row per setting (name, default, what it does)")
    for s in SETTINGS:
        row = next(line for line in section.splitlines() if f"`{s.name}`" in line)
        assert s.shown in row, (s.name, s.shown, row)
