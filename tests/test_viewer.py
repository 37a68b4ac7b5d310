"""The built-in viewer at ``/``: its files over real HTTP, and the page itself driven in
Debian's headless Chromium (Playwright for Python, no downloaded browser) against a real
uvicorn server over a DuckDB file made by a real ingest of the shipped toy model.

The browser tests fail, never skip, when Chromium cannot be launched: the message says how
to install it (``make browser``). The screenshot lands in ``artifacts/viewer.png``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import Server  # tests/support.py: uvicorn in a thread on a free loopback port

from headgraph.api.viewer import CSP
from headgraph.server import create_app

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "headgraph" / "api" / "static"
ARTIFACTS = ROOT / "artifacts"
MANIFEST = json.loads((ROOT / "headgraph" / "toy" / "checkpoints" / "manifest.json").read_text())
CHROMIUM = os.environ.get("HEADGRAPH_CHROMIUM", "/usr/bin/chromium")
# Keep Chromium off the network (this machine's is closed) and out of first-run work.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL = ("install Debian's Chromium with `make browser` (or `apt-get update && apt-get "
           "install -y chromium`) and Playwright for Python with `pip install -e '.[test]'` "
           "(never `playwright install`: it downloads a browser); HEADGRAPH_CHROMIUM names "
           "another Chromium binary")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def server(toy_db: Path) -> Iterator[Server]:
    """The app over ``toy_db`` (conftest: ``ingest("toy", path)``, the real pipeline)."""
    s = Server(create_app(toy_db))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium under Playwright, with a fresh profile; fails (not skips) if absent."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed: {INSTALL}.", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL}.", pytrace=False)
    pw = sync_playwright().start()
    try:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            args=FLAGS, headless=True, viewport={"width": 1400, "height": 820})
    except Exception as exc:
        pw.stop()
        pytest.fail(f"could not launch {CHROMIUM} ({exc}): {INSTALL}.", pytrace=False)
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()
    pw.stop()


class Page:
    """One browser tab on the viewer, recording its requests and console errors."""

    def __init__(self, context: Any, server: Server) -> None:
        self.server = server
        self.page = context.new_page()
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.server.url}/{fragment}")
        self.page.wait_for_selector("#models button[data-model]")

    def select_model(self, name: str) -> None:
        self.page.click(f'#models button[data-model="{name}"]')
        self.page.wait_for_selector(f'#graph[data-model="{name}"][aria-busy="false"]')

    def drawn_edges(self) -> list[dict[str, Any]]:
        return self.page.evaluate("headgraphViewer.cy.edges().map((e) => e.data())")

    def drawn_nodes(self) -> list[str]:
        return self.page.evaluate(
            "headgraphViewer.cy.nodes().not('.column').map((n) => n.id())")

    def redraw(self, change: Any) -> None:
        """Run ``change`` (a control edit) and wait for the drawing it asks for."""
        change()  # the page sets aria-busy="true" on the input event, before this returns
        self.page.wait_for_selector('#graph[aria-busy="false"]')

    def click_node(self, name: str) -> None:
        """A real mouse click on the canvas, where Cytoscape drew ``name``."""
        x, y = self.page.evaluate(
            """(name) => { const n = headgraphViewer.cy.getElementById(name);
                           const box = document.querySelector('#graph').getBoundingClientRect();
                           const p = n.renderedPosition();
                           return [box.left + p.x, box.top + p.y]; }""", name)
        self.page.mouse.click(x, y)
        self.page.wait_for_selector(f'#panel[data-node="{name}"]')

    def panel_rows(self, direction: str, kind: str) -> list[str]:
        return self.page.eval_on_selector_all(
            f'#panel table[data-dir="{direction}"][data-kind="{kind}"] tbody tr',
            "rows => rows.map((r) => r.dataset.name)")

    def assert_clean(self) -> None:
        """No console errors (CSP included); only same-origin files and POST /graphql."""
        assert self.errors == []
        origin = self.server.url
        for method, url in self.requests:
            assert url.startswith(origin + "/") or url.startswith("data:"), url
            if method != "GET":
                assert (method, urlsplit(url).path) == ("POST", "/graphql")


@pytest.fixture
def viewer(browser: Any, server: Server) -> Iterator[Page]:
    page = Page(browser, server)
    yield page
    page.page.close()


# --- the files ------------------------------------------------------------------------

def test_root_serves_the_page_with_a_strict_csp_and_its_files(server: Server):
    r = server.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP
    refs = re.findall(r'(?:src|href)="(viewer/[^"]+)"', r.text)
    assert set(refs) == {"viewer/viewer.css", "viewer/vendor/cytoscape.min.js",
                         "viewer/viewer.js", "viewer/attribution.html"}
    for ref in refs:
        f = server.client.get("/" + ref)
        assert f.status_code == 200 and f.content == (STATIC / ref.removeprefix("viewer/")).read_bytes()
        assert f.headers["x-content-type-options"] == "nosniff"
    assert server.client.get("/viewer/viewer.js").headers["content-type"].startswith(
        "text/javascript")
    head = server.client.head("/viewer/viewer.css")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("path", ["/viewer/nope.js", "/viewer/../app.py", "/viewer/%2e%2e/app.py",
                                  "/viewer/", "/viewer/vendor"])
def test_only_files_of_the_static_folder_are_served(server: Server, path: str):
    r = server.client.get(path)
    assert r.status_code == 404
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


def test_the_page_refuses_other_methods(server: Server):
    assert server.client.post("/").status_code == 405
    r = server.client.post("/viewer/viewer.js")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_vendored_cytoscape_is_the_version_pinned_in_viewer_package_json():
    pinned = json.loads((ROOT / "viewer" / "package.json").read_text())["dependencies"]["cytoscape"]
    lock = json.loads((ROOT / "viewer" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/cytoscape"]["version"] == pinned
    first = (STATIC / "vendor" / "cytoscape.min.js").read_text().splitlines()[0]
    assert first.startswith(f"/* cytoscape {pinned} (npm)"), "run: cd viewer && npm ci && npm run build"


def test_the_page_names_no_other_origin():
    for name in ("index.html", "viewer.js", "viewer.css"):
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", (STATIC / name).read_text()), name


def test_package_data_ships_the_static_files():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["headgraph.api"]
    base = ROOT / "headgraph" / "api"
    shipped = {p for g in globs for p in base.glob(g) if p.is_file()}
    assert {p for p in STATIC.rglob("*") if p.is_file()} <= shipped


# --- the page in a browser ------------------------------------------------------------

def test_clicking_an_induction_head_lists_the_previous_token_head_among_its_k_feeders(
        viewer: Page, server: Server):
    induction, previous = MANIFEST["heads"]["induction"][0], MANIFEST["heads"]["previous_token"][0]
    viewer.open()
    viewer.select_model("toy")

    # Useful at once: K edges, each node's top 2 feeders, layers as columns.
    edges = viewer.drawn_edges()
    assert edges and {e["kind"] for e in edges} == {"K"}
    per_target: dict[str, int] = {}
    for e in edges:
        per_target[e["target"]] = per_target.get(e["target"], 0) + 1
    assert max(per_target.values()) == 2
    xs = viewer.page.evaluate(
        "Object.fromEntries(headgraphViewer.cy.nodes().map((n) => [n.id(), n.position('x')]))")
    assert xs["EMBED"] < xs["L0H0"] == xs["L0H3"] < xs["L1H0"] == xs["L1H3"]
    assert f"K:{previous}>{induction}" in {e["id"] for e in edges}

    viewer.click_node(induction)
    panel = viewer.page.locator("#panel")
    assert panel.locator("h2").inner_text() == induction
    assert previous in viewer.panel_rows("feeders", "K")
    assert viewer.panel_rows("feeders", "Q") and viewer.panel_rows("feeders", "V")
    assert "copying ratio" in panel.inner_text()
    schema = server.client.get("/schema.graphql").text
    node_type = schema[schema.index("type Node {"):]
    has_roles = re.search(r"^\s+roles\b", node_type[:node_type.index("\n}")], re.M) is not None
    assert (panel.locator("h3", has_text="Roles").count() == 1) == has_roles

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "viewer.png"
    viewer.page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    viewer.assert_clean()


def test_kind_top_k_and_threshold_filters_redraw_the_graph(viewer: Page):
    viewer.open()
    viewer.select_model("toy")
    page = viewer.page

    viewer.redraw(lambda: page.check('#kinds input[value="Q"]'))
    assert {e["kind"] for e in viewer.drawn_edges()} == {"Q", "K"}

    viewer.redraw(lambda: page.fill("#top", "1"))
    edges = viewer.drawn_edges()
    assert all(e["rank"] == 1 for e in edges)
    assert len({(e["kind"], e["target"]) for e in edges}) == len(edges)

    viewer.redraw(lambda: (page.fill("#top", "10"), page.fill("#min-score", "0.2")))
    edges = viewer.drawn_edges()
    assert edges and all(e["score"] >= 0.2 for e in edges)

    assert "MLP0" not in viewer.drawn_nodes()
    viewer.redraw(lambda: page.check("#extras"))
    assert {"MLP0", "MLP1", "UNEMBED"} <= set(viewer.drawn_nodes())
    assert "kinds=Q%2CK" in page.url and "min=0.2" in page.url and "extras=1" in page.url
    viewer.assert_clean()


def test_a_link_with_a_hash_reopens_the_same_view(viewer: Page):
    viewer.open("#model=toy&kinds=V&top=1&node=L1H2")
    viewer.page.wait_for_selector('#panel[data-node="L1H2"]')
    assert viewer.page.is_checked('#kinds input[value="V"]')
    assert not viewer.page.is_checked('#kinds input[value="K"]')
    assert {e["kind"] for e in viewer.drawn_edges()} == {"V"}
    strongest = viewer.panel_rows("feeders", "V")[0]

    # a name in the panel is a link to that node
    viewer.page.click('#panel table[data-dir="feeders"][data-kind="V"] tbody tr td button')
    viewer.page.wait_for_selector(f'#panel[data-node="{strongest}"]')
    assert f"node={strongest}" in viewer.page.url
    viewer.assert_clean()


def test_roles_are_shown_when_the_schema_has_node_roles(viewer: Page):
    """The page asks the schema (introspection) whether ``Node.roles`` exists; here the
    answers are faked so that it does, whatever this server's schema says."""
    role = {"role": "induction", "metric": "induction_share", "value": 0.81,
            "threshold": 0.4, "probe": "repeat(seq=20,batch=32,seed=0)"}
    fields = "role metric value threshold probe"

    def leaf(name: str, kind: str = "SCALAR") -> dict[str, Any]:
        return {"name": name, "args": [], "defaultValue": None,
                "type": {"kind": "NON_NULL", "name": None,
                         "ofType": {"kind": kind, "name": "String", "ofType": None}}}

    def answer(route: Any) -> None:
        body = json.loads(route.request.post_data)
        query, variables = body["query"], body.get("variables") or {}
        if '__type(name: "Node")' in query:
            roles = {"name": "roles", "args": [{"type": {"kind": "SCALAR"}, "defaultValue": None}],
                     "type": {"kind": "NON_NULL", "name": None, "ofType": {
                         "kind": "LIST", "name": None, "ofType": {
                             "kind": "NON_NULL", "name": None,
                             "ofType": {"kind": "OBJECT", "name": "Role", "ofType": None}}}}}
            route.fulfill(json={"data": {"__type": {"fields": [leaf("name"), roles]}}})
        elif variables.get("n") == "Role":
            route.fulfill(json={"data": {"__type": {"fields": [leaf(f) for f in fields.split()]}}})
        elif f"roles {{ {fields} }}" in query:
            body["query"] = query.replace(f"roles {{ {fields} }}", "")
            data = route.fetch(post_data=json.dumps(body)).json()
            data["data"]["node"]["roles"] = [role]
            route.fulfill(json=data)
        else:
            route.continue_()

    viewer.page.route("**/graphql", answer)
    viewer.open("#model=toy&node=L1H1")
    viewer.page.wait_for_selector('#panel[data-node="L1H1"]')
    roles = viewer.page.locator("#panel ul.roles li")
    assert roles.count() == 1 and roles.inner_text().startswith("induction")
    viewer.assert_clean()
