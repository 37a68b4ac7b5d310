"""The built-in viewer on a model of 144 heads, in Debian's headless Chromium: the search
box, labels that follow the zoom without overlapping, the layer range / kind / top-k / z
filters (and that only the drawn layers' edges are fetched), and a head's KV head, KV
siblings and feeders with z at a glance.

The model is a random-weight Llama of 12 layers x 12 query heads sharing 4 KV heads
(grouped-query attention), ingested by the real pipeline (a few seconds).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from support import Server
from viewer_page import Page

from headgraph.api.settings import Settings
from headgraph.server import create_app

WIDE = "random:llama,layers=12,heads=12,kv_heads=4,d_model=48,d_mlp=64,vocab=64,ctx=16"
LAYERS = HEADS = 12


@pytest.fixture(scope="module")
def wide_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from headgraph.ingest.pipeline import ingest

    path = tmp_path_factory.mktemp("wide") / "wide.duckdb"
    ingest(WIDE, path, name="wide")
    return path


@pytest.fixture(scope="module")
def server(wide_db: Path) -> Iterator[Server]:
    s = Server(create_app(wide_db))
    yield s
    s.stop()


def heads(viewer: Page) -> set[str]:
    return set(viewer.page.evaluate("headgraphViewer.cy.nodes('.head').map((n) => n.id())"))


def layers(viewer: Page) -> tuple[int, int]:
    a, b = viewer.page.get_attribute("#graph", "data-layers").split("-")
    return int(a), int(b)


def heads_of(first: int, last: int) -> set[str]:
    return {f"L{layer}H{h}" for layer in range(first, last + 1) for h in range(HEADS)}


def fetched(viewer: Page) -> list[tuple[int, str]]:
    """The (layer, kind) pairs whose feeders the page asked for, in order."""
    return [(int(layer), kind) for q in viewer.queries if q["query"].lstrip().startswith("query Edges")
            for layer, kind in re.findall(r"nodes\(layer: (\d+)\) \{ name feeders\(kind: (\w+)",
                                          q["query"])]


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["x1"] < b["x2"] and b["x1"] < a["x2"] and a["y1"] < b["y2"] and b["y1"] < a["y2"]


def test_search_finds_a_node_in_layers_not_drawn_and_focuses_it(viewer: Page):
    viewer.open("#model=wide&layers=0-3")
    viewer.wait_drawn("wide")
    assert layers(viewer) == (0, 3) and "L9H7" not in heads(viewer)

    viewer.page.fill("#search", "l9h7")
    viewer.page.wait_for_selector('#search-results li[data-name="L9H7"][aria-selected="true"]')
    viewer.page.keyboard.press("Enter")
    viewer.page.wait_for_selector('#panel[data-node="L9H7"]')
    first, last = layers(viewer)
    assert first <= 9 <= last and last - first == 3  # the range moved, its width kept
    assert heads(viewer) == heads_of(first, last)
    node = viewer.page.evaluate("""() => { const cy = headgraphViewer.cy;
        const n = cy.getElementById('L9H7');
        return { box: n.renderedBoundingBox(), w: cy.width(), h: cy.height(),
                 label: n.style('label'), focus: n.hasClass('focus') }; }""")
    box = node["box"]
    assert 0 <= box["x1"] and box["x2"] <= node["w"] and 0 <= box["y1"] and box["y2"] <= node["h"]
    assert node["focus"] and node["label"] == "L9H7"  # zoomed in to where names are read
    assert "node=L9H7" in viewer.page.url

    # part of a name: head 7 of every layer, in layer order, drawn ones marked
    viewer.page.fill("#search", "H7")
    viewer.page.wait_for_selector(f'#search-results[data-matches="{LAYERS}"]')
    listed = viewer.page.eval_on_selector_all("#search-results li[data-name]",
                                              "els => els.map((e) => e.dataset.name)")
    assert listed == [f"L{layer}H7" for layer in range(LAYERS)]
    marked = viewer.page.evaluate("headgraphViewer.cy.nodes('.match').map((n) => n.id())")
    assert sorted(marked) == sorted(f"L{layer}H7" for layer in range(first, last + 1))
    viewer.page.fill("#search", "no such head")
    viewer.page.wait_for_selector('#search-results[data-matches="0"]')
    viewer.page.keyboard.press("Escape")
    assert viewer.page.evaluate("headgraphViewer.cy.nodes('.match').length") == 0
    viewer.assert_clean()


def test_labels_follow_the_zoom_and_never_overlap(viewer: Page):
    viewer.open("#model=wide")
    viewer.wait_drawn("wide")
    assert layers(viewer) == (0, LAYERS - 1) and len(heads(viewer)) == LAYERS * HEADS

    seen = set()
    fitted = viewer.page.get_attribute("#graph", "data-labels")
    for level in [None, 0.15, 0.5, 1.0, 2.0]:
        got = fitted if level is None else viewer.zoom(level)
        seen.add(got)
        shown = [lab for lab in viewer.labels() if lab["label"]]
        if got == "lbl-none":
            assert shown == []
            continue
        assert len(shown) == LAYERS * HEADS
        for lab in shown:
            expected = lab["id"] if got == "lbl-full" else lab["id"][lab["id"].index("H"):]
            assert lab["label"] == expected
            assert lab["px"] >= (8 if got == "lbl-full" else 6.5)  # readable on screen
            t, n = lab["text"], lab["node"]
            assert n["x1"] <= t["x1"] and t["x2"] <= n["x2"] and n["y1"] <= t["y1"] <= t["y2"] <= n["y2"]
        for a, b in combinations(shown, 2):
            assert not overlap(a["text"], b["text"]), (a["id"], b["id"])
        # the axes' labels, thinned out when columns or rows are close, never collide either
        for axis in (".axis-col", ".axis-row"):
            boxes = viewer.page.eval_on_selector_all(
                f"#axes {axis}", """els => els.map((e) => { const r = e.getBoundingClientRect();
                                      return { x1: r.left, x2: r.right, y1: r.top, y2: r.bottom }; })""")
            assert boxes and not any(overlap(a, b) for a, b in combinations(boxes, 2)), axis
    assert seen == {"lbl-none", "lbl-short", "lbl-full"}
    viewer.assert_clean()


def test_layer_range_kind_top_and_z_filters_change_what_is_drawn_fetching_only_drawn_layers(
        viewer: Page):
    page = viewer.page
    viewer.open("#model=wide&layers=0-3")
    viewer.wait_drawn("wide")
    assert sorted(fetched(viewer)) == [(layer, "K") for layer in range(4)]
    assert len([q for q in viewer.queries if "query Edges" in q["query"]]) == 1  # one batch
    assert heads(viewer) == heads_of(0, 3)

    viewer.queries.clear()
    viewer.redraw(lambda: page.click("#layers-next"))
    assert layers(viewer) == (4, 7) and heads(viewer) == heads_of(4, 7)
    assert sorted(fetched(viewer)) == [(layer, "K") for layer in range(4, 8)]
    drawn = set(viewer.drawn_nodes())
    edges = viewer.drawn_edges()
    assert edges and all(e["source"] in drawn and e["target"] in drawn for e in edges)

    viewer.queries.clear()
    viewer.redraw(lambda: page.click("#layers-prev"))
    assert layers(viewer) == (0, 3) and fetched(viewer) == []  # kept from before

    viewer.redraw(lambda: page.check('#kinds input[value="V"]'))
    assert {e["kind"] for e in viewer.drawn_edges()} == {"K", "V"}
    assert sorted(fetched(viewer)) == [(layer, "V") for layer in range(4)]  # only the new kind

    viewer.redraw(lambda: page.fill("#top", "1"))
    edges = viewer.drawn_edges()
    assert edges and all(e["rank"] == 1 for e in edges)
    assert len({(e["kind"], e["target"]) for e in edges}) == len(edges)

    zs = sorted(e["z"] for e in edges)
    floor = round(zs[len(zs) // 2], 1)
    viewer.redraw(lambda: page.fill("#min-z", str(floor)))
    kept = viewer.drawn_edges()
    assert kept and len(kept) < len(edges) and all(e["z"] >= floor for e in kept)

    viewer.redraw(lambda: (page.fill("#layer-from", "10"), page.fill("#layer-to", "11")))
    assert layers(viewer) == (10, 11) and heads(viewer) == heads_of(10, 11)
    assert "layers=10-11" in page.url and f"z={floor}" in page.url and "top=1" in page.url
    viewer.redraw(lambda: page.click("#layers-all"))
    assert layers(viewer) == (0, LAYERS - 1)
    viewer.assert_clean()


def test_a_heads_kv_head_siblings_and_feeders_with_z_show_at_a_glance(viewer: Page,
                                                                       server: Server):
    answer = server.client.post("/graphql", json={"query": """{ model(name: "wide") {
        nKvHeads nodes(layer: 5) { name kvHead roles }
        } node(model: "wide", name: "L5H6") { feeders(kind: K, top: 8) { source { name } z } } }"""
    }).json()["data"]
    kv = {n["name"]: n["kvHead"] for n in answer["model"]["nodes"] if n["kvHead"] is not None}
    assert answer["model"]["nKvHeads"] == 4 and len(set(kv.values())) == 4
    siblings = sorted(n for n, k in kv.items() if k == kv["L5H6"] and n != "L5H6")
    assert len(siblings) == HEADS // 4 - 1

    viewer.open("#model=wide&layers=2-5")
    viewer.wait_drawn("wide")
    assert viewer.page.locator("#axes .axis-kv").count() == 4  # the KV groups, on the left
    viewer.click_node("L5H6")
    panel = viewer.page.locator("#panel")
    assert f"{kv['L5H6']} of 4" in panel.locator("dd .kv").inner_text()
    assert sorted(panel.locator("dd .kv button").all_inner_texts()) == siblings
    marked = viewer.page.evaluate("headgraphViewer.cy.nodes('.kv-sibling').map((n) => n.id())")
    assert sorted(marked) == siblings
    assert "none" in panel.locator("h3:has-text('Roles') + *").inner_text()  # random weights

    rows = viewer.page.eval_on_selector_all(
        '#panel table[data-dir="feeders"][data-kind="K"] tbody tr',
        "rows => rows.map((r) => [r.dataset.name, r.querySelector('td.z').textContent])")
    assert rows == [[e["source"]["name"], f"{e['z']:.1f}"] for e in answer["node"]["feeders"]]
    labelled = viewer.page.evaluate("""headgraphViewer.cy.getElementById('L5H6').incomers('edge')
        .map((e) => [e.source().id(), e.hasClass('zlabel'), e.style('label')])""")
    z_of = {e["source"]["name"]: e["z"] for e in answer["node"]["feeders"]}
    assert labelled and all(cls for _, cls, _ in labelled)
    assert all(text == f"z {z_of[src]:.1f}" for src, _, text in labelled)

    # a feeder in a layer not drawn: its link moves the range there
    outside = next(e["source"]["name"] for e in answer["node"]["feeders"]
                   if e["source"]["name"].startswith(("L0H", "L1H")))
    viewer.page.click(f'#panel table[data-dir="feeders"][data-kind="K"] tr[data-name="{outside}"] button')
    viewer.page.wait_for_selector(f'#panel[data-node="{outside}"]')
    assert outside in heads(viewer)
    viewer.assert_clean()



def test_batches_a_server_refuses_as_too_big_are_split_until_they_pass(browser: Any,
                                                                       server: Server,
                                                                       wide_db: Path):
    """Edges come as (layer, kind) pairs, 24 aliased fields to a request; a server whose
    max_aliases is 3 refuses that (LIMIT_EXCEEDED), and the page halves each batch until it
    passes, drawing the same graph."""
    tight = Server(create_app(wide_db, Settings.of({"max_aliases": 3})))
    pages = [Page(browser, server), Page(browser, tight)]
    try:
        drawn, sizes = [], []
        for page in pages:
            page.open("#model=wide&layers=0-11&kinds=Q,K,V&top=1")
            page.wait_drawn("wide")
            drawn.append(sorted(e["id"] for e in page.drawn_edges()))
            sizes.append(sorted(len(re.findall(r"\bp\d+: ", q["query"])) for q in page.queries
                                if q["query"].lstrip().startswith("query Edges")))
            page.assert_clean()
        assert drawn[0] and drawn[0] == drawn[1]
        assert sizes[0] == [12, 24]  # 12 layers x 3 kinds = 36 pairs
        assert 24 in sizes[1] and set(sizes[1]) <= {3, 6, 12, 24}
        assert sum(n for n in sizes[1] if n <= 3) == 36  # what passed: every pair, once
    finally:
        for page in pages:
            page.page.close()
        tight.stop()
