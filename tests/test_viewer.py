"""The built-in viewer at ``/``: its files over real HTTP, and the page itself driven in
Debian's headless Chromium (Playwright for Python, no downloaded browser) against a real
uvicorn server over a DuckDB file made by a real ingest of the shipped toy model. The
viewer on models of 144 heads and more: tests/test_viewer_scale.py.

The browser tests fail, never skip, when Chromium cannot be launched (the ``browser``
fixture of conftest.py says how to install it: ``make browser``). The screenshot lands in
``artifacts/viewer.png``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Server  # tests/support.py: uvicorn in a thread on a free loopback port
from viewer_page import Page  # tests/viewer_page.py: one tab on the viewer

from headgraph.api.viewer import CSP
from headgraph.server import create_app

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "headgraph" / "api" / "static"
ARTIFACTS = ROOT / "artifacts"
MANIFEST = json.loads((ROOT / "headgraph" / "toy" / "checkpoints" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def server(toy_db: Path) -> Iterator[Server]:
    """The app over ``toy_db`` (conftest: ``ingest("toy", path)``, the real pipeline)."""
    s = Server(create_app(toy_db))
    yield s
    s.stop()


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
    # viewer.js is an ES module; what it imports is served as JavaScript too (a module with
    # another type is refused by the browser)
    imported = set(re.findall(r'from "\./([\w-]+\.js)"', (STATIC / "viewer.js").read_text()))
    assert imported == {p.name for p in STATIC.glob("viewer-*.js")} and len(imported) == 6
    for name in imported:
        f = server.client.get(f"/viewer/{name}")
        assert f.status_code == 200 and f.headers["content-type"].startswith("text/javascript")
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
    files = [STATIC / "index.html", STATIC / "viewer.css", *STATIC.glob("viewer*.js")]
    assert len(files) == 9
    for path in files:
        # the SVG namespace of the role stripes (data: URLs) is a name, never fetched
        text = path.read_text().replace("xmlns='http://www.w3.org/2000/svg'", "")
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name


def test_the_viewer_knows_every_role_the_server_derives():
    """viewer-layout.js colours each role and asks Model.heads(role:) for each (an unknown
    role is BAD_INPUT there); its list is the server's ROLE_RULES, in order."""
    from headgraph.queries.evidence import ROLES

    layout = (STATIC / "viewer-layout.js").read_text()
    block = layout[layout.index("export const ROLES = ["):]
    block = block[:block.index("];")]
    assert tuple(re.findall(r'role: "(\w+)"', block)) == ROLES


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


def test_roles_colour_the_heads_and_a_role_in_the_legend_finds_them(viewer: Page,
                                                                      server: Server):
    answer = server.client.post("/graphql", json={"query": '{ model(name: "toy") { '
                                                   'nodes { name roles } } }'}).json()
    roles = {n["name"]: n["roles"] for n in answer["data"]["model"]["nodes"] if n["roles"]}
    copying = sorted(n for n, r in roles.items() if "copying" in r)
    assert copying  # the toy's copying heads (from its weights: no probes needed)
    viewer.open("#model=toy")
    viewer.wait_drawn("toy")

    fills = viewer.page.evaluate("Object.fromEntries(headgraphViewer.cy.nodes('.head')"
                                 ".map((n) => [n.id(), n.style('background-color')]))")
    green = fills[copying[0]]
    assert {fills[n] for n in copying} == {green}  # one colour per role
    assert all(fills[n] != green for n in fills if "copying" not in roles.get(n, []))

    legend = viewer.page.eval_on_selector_all("#roles [data-role]",
                                              "els => els.map((e) => e.dataset.role)")
    assert set(legend) == {r for rs in roles.values() for r in rs}
    viewer.page.click('#roles button:has([data-role="copying"])')
    assert viewer.page.input_value("#search") == "copying"
    viewer.page.wait_for_selector(f'#search-results[data-matches="{len(copying)}"]')
    marked = viewer.page.evaluate("headgraphViewer.cy.nodes('.match').map((n) => n.id())")
    assert sorted(marked) == copying

    viewer.page.keyboard.press("Enter")  # the first match
    viewer.page.wait_for_selector(f'#panel[data-node="{copying[0]}"]')
    assert viewer.page.locator('#panel ul.roles [data-role="copying"]').count() == 1
    viewer.assert_clean()
