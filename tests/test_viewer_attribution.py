"""The attribution-graph page (/viewer/attribution.html) in Debian's headless Chromium
(Playwright, no downloaded browser) against a real uvicorn server over a DuckDB file holding
real graphs (tests/data/graphs): the view drawn by layer and position as Neuronpedia lays
it out, the threshold slider, a clicked node's label and links, pinned nodes marked, and a
view too big to draw whole loaded by neighbourhood. The screenshot lands in
``artifacts/attribution.png``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Server
from test_viewer import ARTIFACTS, STATIC
from viewer_page import Page

from headgraph.api.viewer import CSP
from headgraph.attribution.importer import import_graph
from headgraph.server import create_app

GRAPHS = Path(__file__).parent / "data" / "graphs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("attribution_page") / "g.duckdb"
    for name in ("bee-insect-clt.json", "gemma-small-big-en.reduced.json",
                 "gemma-dollar.reduced.json"):
        import_graph(GRAPHS / name, db)
    s = Server(create_app(db))
    yield s
    s.stop()


class GraphPage(Page):
    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.server.url}/viewer/attribution.html{fragment}")
        self.page.wait_for_selector("#graphs button[data-slug]")
        self.wait()

    def wait(self) -> None:
        self.page.wait_for_selector('#graph[aria-busy="false"][data-slug]')

    def until(self, expression: str, timeout_s: float = 30.0) -> None:
        """Poll ``expression`` in the page until it holds (wait_for_function would eval a
        string, which the page's CSP forbids)."""
        import time

        end = time.monotonic() + timeout_s
        while not self.page.evaluate(expression):
            assert time.monotonic() < end, f"never true: {expression}"
            self.page.wait_for_timeout(50)

    def drawn(self) -> dict[str, dict[str, float]]:
        return self.page.evaluate(
            """Object.fromEntries(headgraphAttribution.cy.nodes().not('.column').map(
                 (n) => [n.id(), {x: n.position('x'), y: n.position('y'),
                                  pinned: n.hasClass('pinned')}]))""")

    def click_node(self, key: str) -> None:
        x, y = self.page.evaluate(
            """(key) => { const n = headgraphAttribution.cy.getElementById(key);
                          const box = document.querySelector('#graph').getBoundingClientRect();
                          const p = n.renderedPosition(); return [box.left + p.x, box.top + p.y]; }""",
            key)
        self.page.mouse.click(x, y)
        self.page.wait_for_selector(f'#panel[data-node="{key}"]')


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[GraphPage]:  # noqa: F811
    p = GraphPage(browser, server)
    yield p
    p.page.close()


def test_the_page_and_its_files_are_served_under_the_csp(server: Server):
    r = server.client.get("/viewer/attribution.html")
    assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
    refs = set(re.findall(r'(?:src|href)="([^"#]+)"', r.text)) - {"data:,", "../"}
    assert refs == {"viewer.css", "attribution.css", "vendor/cytoscape.min.js", "attribution.js"}
    for ref in refs:
        assert server.client.get(f"/viewer/{ref}").content == (STATIC / ref).read_bytes()
    for name in ("attribution.html", "attribution.js", "attribution.css"):
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", (STATIC / name).read_text())


def test_the_view_is_drawn_by_layer_and_position_with_neuronpedias_slider(page: GraphPage):
    doc = json.loads((GRAPHS / "bee-insect-clt.json").read_text())
    slug = doc["metadata"]["slug"]
    page.open(f"#model=gemma-2-2b&slug={slug}")
    drawn = page.drawn()
    by_id = {n["node_id"]: n for n in doc["nodes"]}
    shown = {n["node_id"] for n in doc["nodes"] if n["feature_type"] in ("embedding", "logit")
             or n["influence"] <= 0.8}
    assert set(drawn) == shown and len(drawn) == 265
    assert page.page.is_checked('#rule input[value="INFLUENCE"]')
    assert page.page.input_value("#threshold") == "0.8"

    def row(key: str) -> float:
        return drawn[key]["y"]
    embedding = next(k for k in drawn if by_id[k]["feature_type"] == "embedding")
    logit = next(k for k in drawn if by_id[k]["feature_type"] == "logit")
    low = next(k for k in drawn if by_id[k]["layer"] == "0")
    high = next(k for k in drawn if by_id[k]["layer"] == "20")
    assert row(embedding) > row(low) > row(high) > row(logit)  # embeddings at the bottom
    first = [k for k in drawn if by_id[k]["ctx_idx"] == 1]
    last = [k for k in drawn if by_id[k]["ctx_idx"] == 6]
    assert max(drawn[k]["x"] for k in first) < min(drawn[k]["x"] for k in last)

    page.page.eval_on_selector("#threshold", "(el) => { el.value = '0.4'; "
                               "el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.until("headgraphAttribution.state.threshold === 0.4")
    page.wait()
    page.until("headgraphAttribution.cy.nodes().not('.column').length < 265")
    assert set(page.drawn()) == {n["node_id"] for n in doc["nodes"]
                                 if n["feature_type"] in ("embedding", "logit")
                                 or n["influence"] <= 0.4}
    assert "t=0.4" in page.page.url
    page.page.check('#rule input[value="RECOMPUTE"]')
    page.until("headgraphAttribution.state.prune === 'RECOMPUTE'")
    page.wait()
    assert page.page.is_visible("#edge-threshold")
    page.assert_clean()


def test_a_clicked_node_shows_its_label_and_links_and_pins(page: GraphPage):
    doc = json.loads((GRAPHS / "bee-insect-clt.json").read_text())
    slug = doc["metadata"]["slug"]
    page.open(f"#model=gemma-2-2b&slug={slug}")
    feature = max((n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"),
                  key=lambda n: sum(1 for x in doc["links"] if n["node_id"] in
                                    (x["source"], x["target"])))
    page.click_node(feature["node_id"])
    panel = page.page.locator("#panel")
    assert panel.locator("h2").inner_text() == (feature["clerp"] or feature["node_id"])
    inputs = page.page.eval_on_selector_all('#panel table[data-dir="in"] tr',
                                            "rows => rows.map((r) => r.dataset.key)")
    strongest = sorted((x for x in doc["links"] if x["target"] == feature["node_id"]),
                       key=lambda x: -abs(x["weight"]))[:10]
    assert inputs == [x["source"] for x in strongest]
    edges = page.page.evaluate("headgraphAttribution.cy.edges().map((e) => e.data('source'))")
    assert edges and feature["node_id"] in "".join(edges) or edges
    page.page.click("#panel button.pin")
    page.until(
        f"headgraphAttribution.state.pinned.includes({json.dumps(feature['node_id'])})")
    page.wait()
    assert page.drawn()[feature["node_id"]]["pinned"]
    assert "pinned=" in page.page.url
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "attribution.png"))
    page.assert_clean()


def test_pinned_nodes_of_the_file_are_marked_and_kept(page: GraphPage):
    doc = json.loads((GRAPHS / "gemma-small-big-en.reduced.json").read_text())
    pinned = set(doc["qParams"]["pinnedIds"])
    page.open("#model=gemma-2-2b&slug=gemma-small-big-en&t=0.2")
    drawn = page.drawn()
    assert pinned <= set(drawn)
    assert {k for k, v in drawn.items() if v["pinned"]} == pinned
    page.assert_clean()


def test_shared_ids_are_two_nodes_and_big_views_load_by_neighbourhood(page: GraphPage):
    """gemma-dollar's two 0_2_1 nodes are drawn apart; with a drawing budget (max=) below
    the view's 828 nodes, the page draws the logits' neighbourhood and adds each clicked
    node's."""
    page.open("#model=gemma-2-2b&slug=gemma-dollar")
    assert {"0_2_1@0", "0_2_1@717"} <= set(page.drawn())
    page.click_node("0_2_1@0")
    assert "therefrom" in page.page.locator("#panel h2").inner_text()
    page.page.goto(f"{page.server.url}/viewer/attribution.html#model=gemma-2-2b&"
                   "slug=gemma-dollar&max=40")
    page.page.reload()
    page.page.wait_for_selector('#graph[data-partial="true"][aria-busy="false"]')
    first = page.drawn()
    doc = json.loads((GRAPHS / "gemma-dollar.reduced.json").read_text())
    logits = {n["node_id"] for n in doc["nodes"] if n["feature_type"] == "logit"}
    assert logits <= set(first) and len(first) < 828
    assert "828 nodes" in page.page.locator("#drawing .notice").inner_text()
    other = next(k for k in first if k not in logits and not k.startswith("E_"))
    page.click_node(other)
    page.until(f"headgraphAttribution.state.nodes.size > {len(first)}")
    assert len(page.drawn()) > len(first)
    page.assert_clean()
