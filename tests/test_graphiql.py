"""GraphiQL at ``GET /graphql``, served by headgraph itself: the page and its vendored files
over real HTTP, and the page in Debian's headless Chromium with every origin but the test
server's loopback address blocked (an air-gapped lab), typing and running a query.

The browser tests use conftest's ``browser`` fixture (marked slow; they fail, never skip,
when Chromium cannot be launched).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from support import Server  # tests/support.py: uvicorn in a thread on a free loopback port

from headgraph.api.graphiql import NONCE
from headgraph.server import create_app

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "headgraph" / "api" / "static"
VENDOR = STATIC / "vendor" / "graphiql"
HTML = {"accept": "text/html,application/xhtml+xml"}
QUERY = '{ node(model: "toy", name: "L1H2") { kind feeders(kind: K, top: 2) { source { name } z } } }'


@pytest.fixture(scope="module")
def server(toy_db: Path) -> Iterator[Server]:
    s = Server(create_app(toy_db))
    yield s
    s.stop()


def _csp(header: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


# --- the page over HTTP -----------------------------------------------------------------

def test_the_page_loads_only_files_of_this_server_under_a_strict_csp(server: Server):
    r = server.client.get("/graphql", headers=HTML)
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "unpkg" not in r.text and not re.search(r"(src|href)=\"(https?:)?//", r.text)
    refs = re.findall(r'(?:src|href)="(viewer/[^"]+)"', r.text)
    assert set(refs) == {"viewer/graphiql.css", "viewer/graphiql.js",
                         "viewer/vendor/graphiql/graphiql.min.css",
                         "viewer/vendor/graphiql/react.production.min.js",
                         "viewer/vendor/graphiql/react-dom.production.min.js",
                         "viewer/vendor/graphiql/graphiql.min.js"}
    for ref in refs:
        f = server.client.get("/" + ref)
        assert f.status_code == 200, ref
        assert f.content == (STATIC / ref.removeprefix("viewer/")).read_bytes()

    csp = _csp(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["font-src"] == ["data:"]
    nonce = re.search(r'<script src="viewer/graphiql.js" nonce="([^"]+)"', r.text).group(1)
    assert csp["style-src"] == ["'self'", f"'nonce-{nonce}'"]
    again = server.client.get("/graphql", headers=HTML)
    assert f"nonce-{nonce}" not in again.headers["content-security-policy"]  # one per response
    assert NONCE not in r.text


def test_the_page_is_served_at_graphql_only_and_a_query_still_runs_over_get(server: Server):
    assert server.client.get("/viewer/graphiql.html").status_code == 404
    r = server.client.get("/graphql", params={"query": "{ models { name } }"}, headers=HTML)
    assert r.json() == {"data": {"models": [{"name": "toy"}]}}
    # ?q= (the page's own link to a query) still gets the page
    page = server.client.get("/graphql", params={"q": "{ models { name } }"}, headers=HTML)
    assert page.headers["content-type"].startswith("text/html")


def test_the_vendored_files_are_the_pinned_builds_with_their_licences():
    pinned = json.loads((ROOT / "viewer" / "package.json").read_text())["dependencies"]
    lock = json.loads((ROOT / "viewer" / "package-lock.json").read_text())["packages"]
    for name, pkg in (("graphiql.min.js", "graphiql"), ("graphiql.min.css", "graphiql"),
                      ("react.production.min.js", "react"),
                      ("react-dom.production.min.js", "react-dom")):
        assert lock[f"node_modules/{pkg}"]["version"] == pinned[pkg]
        text = (VENDOR / name).read_text()
        assert text.startswith(f"/* {pkg} {pinned[pkg]} (npm), "), \
            "run: cd viewer && npm ci && npm run build"
        assert "MIT" in text[:2000] and "sourceMappingURL" not in text[-300:]
    assert pinned["react"].startswith("18.")  # GraphiQL 3's UMD build needs React 18's UMD
    assert sum(p.stat().st_size for p in VENDOR.iterdir()) < 2_000_000


def test_the_page_names_no_other_origin():
    for name in ("graphiql.html", "graphiql.js", "graphiql.css"):
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", (STATIC / name).read_text()), name


# --- the page in a browser, offline -----------------------------------------------------

class Offline:
    """One tab whose every request to another origin than the server's is aborted and kept."""

    def __init__(self, context: Any, server: Server) -> None:
        self.origin = server.url
        self.page = context.new_page()
        self.blocked: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def open(self, search: str = "") -> None:
        self.page.goto(f"{self.origin}/graphql{search}")
        self.page.wait_for_selector(".graphiql-query-editor .CodeMirror")

    def editor(self, which: str) -> str:
        return self.page.evaluate(
            "(sel) => document.querySelector(sel).CodeMirror.getValue()", which)

    def assert_clean(self) -> None:
        """Nothing asked of another origin; no console error (a CSP violation is one)."""
        assert self.blocked == []
        assert self.errors == []
        for method, url in self.requests:
            assert url.startswith(self.origin + "/"), url
            if method != "GET":
                assert (method, urlsplit(url).path) == ("POST", "/graphql")


@pytest.fixture
def offline(browser: Any, server: Server) -> Iterator[Offline]:
    tab = Offline(browser, server)
    yield tab
    tab.page.close()


def test_typing_and_running_a_query_offline_shows_the_answer(offline: Offline, server: Server):
    offline.open()
    page = offline.page
    assert "models" in offline.editor(".graphiql-query-editor .CodeMirror")  # the example

    page.click(".graphiql-query-editor .CodeMirror")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(QUERY)
    page.keyboard.press("Escape")  # close a completion list, if one is open
    assert offline.editor(".graphiql-query-editor .CodeMirror") == QUERY
    page.click(".graphiql-execute-button")
    page.wait_for_function(
        "() => document.querySelector('.result-window .CodeMirror').CodeMirror.getValue()"
        ".includes('feeders')")
    shown = json.loads(offline.editor(".result-window .CodeMirror"))
    expected = server.client.post("/graphql", json={"query": QUERY}).json()
    assert shown == expected and shown["data"]["node"]["kind"] == "HEAD"
    assert len(shown["data"]["node"]["feeders"]) == 2

    # the query is kept in the URL, so the link reopens it
    page.wait_for_function("(q) => new URLSearchParams(location.search).get('q') === q",
                           arg=QUERY)
    offline.assert_clean()


def test_a_link_opens_its_query_and_the_docs_browse_the_schema(offline: Offline):
    offline.open("?q=" + quote("{ models { name nHeads } }"))
    assert offline.editor(".graphiql-query-editor .CodeMirror") == "{ models { name nHeads } }"
    offline.page.click(".graphiql-execute-button")
    offline.page.wait_for_function(
        "() => document.querySelector('.result-window .CodeMirror').CodeMirror.getValue()"
        ".includes('nHeads')")

    offline.page.click("button[aria-label='Show Documentation Explorer']")
    offline.page.click(".graphiql-doc-explorer a:has-text('Query')")
    offline.page.wait_for_selector(".graphiql-doc-explorer-title:has-text('Query')")
    assert "attributionGraph" in offline.page.inner_text(".graphiql-doc-explorer")

    offline.page.click("button[aria-label='Open settings dialog']")  # adds a <style>: nonce
    offline.page.wait_for_selector("[role='dialog']")
    offline.assert_clean()
