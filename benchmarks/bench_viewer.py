"""The built-in viewer on a llama-3-8b-shaped model (32 layers x 32 query heads, 8 KV heads;
random weights at a small width), in one run:

* what the page asks the server to open a model: the skeleton (every node with its KV head,
  and the heads of each role) plus K feeders (top 2) of the layers it opens on, as (layer, kind) pairs 24 to
  a request, 2 requests at a time as the page does, against the reference, one request
  for every node's K feeders (what the viewer asked before it drew a layer range); p50 of
  ``--reps``;
* headless Chromium (Debian's, under Playwright): seconds from opening the page to the
  drawing done, for the opening view and for every layer, and the time of one frame while
  zooming (software rendering: a browser with a GPU draws faster).

Run: ``.venv/bin/python -m benchmarks.bench_viewer --db /tmp/headgraph-llama32.duckdb``
(the database is made by an ingest if missing, ~30 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # support.Server: uvicorn on a loopback port

SOURCE = "random:llama,layers=32,heads=32,kv_heads=8,d_model=256,d_mlp=256,vocab=100,ctx=16"
ROLES = ("previous_token", "induction", "duplicate_token", "first_token", "copying", "suppression")
SKELETON = ("query($m: String!) { model(name: $m) { nodes { name kind layer head kvHead } "
            + " ".join(f'r{i}: heads(role: "{r}") {{ name }}' for i, r in enumerate(ROLES))
            + " } }")  # as viewer-api.js: roles as a list of heads per role
PAIRS = 24  # (layer, kind) pairs per request, as viewer-api.js
WHOLE = ("query($m: String!) { model(name: $m) { nodes { name kind layer head "
         "K: feeders(kind: K, top: 2) { score baseline z rank source { name } } } } }")
FRAME_JS = """() => new Promise((resolve) => {
  const cy = headgraphViewer.cy; const t = performance.now(); let n = 0;
  const step = () => {
    cy.zoom({ level: cy.zoom() * 1.03, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } });
    if (++n < 20) requestAnimationFrame(step);
    else requestAnimationFrame(() => resolve((performance.now() - t) / 20));
  };
  requestAnimationFrame(step);
})"""


def p50(f, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/headgraph-llama32.duckdb")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    db = Path(args.db)
    if not db.exists():
        from headgraph.ingest.pipeline import ingest

        t = time.perf_counter()
        ingest(SOURCE, db, name="llama32")
        print(f"ingest {SOURCE}: {time.perf_counter() - t:.1f} s")

    from support import Server

    from headgraph.server import create_app

    server = Server(create_app(db))
    try:
        post = server.client.post

        def ask(query: str, **variables: object) -> dict:
            r = post("/graphql", json={"query": query, "variables": variables}, timeout=120)
            body = r.json()
            assert "errors" not in body, body
            return body

        def edges(layers: list[int]) -> None:
            fields = " ".join(f"p{i}: nodes(layer: {layer}) {{ name feeders(kind: K, top: 2) "
                              "{ ...E } }" for i, layer in enumerate(layers))
            ask(f"query Edges($m: String!) {{ model(name: $m) {{ {fields} }} }} fragment E on "
                "Edge { score baseline z rank source { name } }", m="llama32")

        def opening(layers: int = 8) -> None:
            ask(SKELETON, m="llama32")
            batches = [list(range(layers))[i:i + PAIRS] for i in range(0, layers, PAIRS)]
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(edges, batches))

        whole = p50(lambda: ask(WHOLE, m="llama32"), args.reps)
        opened = p50(opening, args.reps)
        every = p50(lambda: opening(32), args.reps)
        print(f"reference, every node's K feeders in one request: {whole * 1000:.0f} ms")
        print(f"opening view (skeleton + 8 layers): {opened * 1000:.0f} ms "
              f"({opened / whole:.2f}x the reference)")
        print(f"every layer (skeleton + 32 layers): {every * 1000:.0f} ms "
              f"({every / whole:.2f}x the reference)")
        browser(server.url)
    finally:
        server.stop()


def browser(url: str) -> None:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path="/usr/bin/chromium",
                           args=["--headless", "--no-sandbox", "--disable-gpu"])
    try:
        for fragment, what in (("#model=llama32", "opening view"),
                               ("#model=llama32&layers=0-31", "every layer")):
            page = b.new_page(viewport={"width": 1400, "height": 820})
            t = time.perf_counter()
            page.goto(f"{url}/{fragment}")
            page.wait_for_selector('#graph[data-model="llama32"][aria-busy="false"]',
                                   timeout=120_000)
            seconds = time.perf_counter() - t
            drawn = page.evaluate("[headgraphViewer.cy.nodes().length, "
                                  "headgraphViewer.cy.edges().length]")
            frame = page.evaluate(FRAME_JS)
            print(f"Chromium, {what}: drawn in {seconds:.2f} s ({drawn[0]} nodes, {drawn[1]} "
                  f"edges), {frame:.0f} ms per frame while zooming")
            page.close()
    finally:
        b.close()
        pw.stop()


if __name__ == "__main__":
    main()
