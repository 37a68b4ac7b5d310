"""One browser tab on the built-in viewer (tests/test_viewer*.py): opening it, driving its
controls, reading what Cytoscape drew, and checking that it stayed on its own origin."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from support import Server

# What every drawn head's label looks like now: its text, size on screen and box.
LABELS_JS = """() => {
  const cy = headgraphViewer.cy;
  const zoom = cy.zoom();
  return cy.nodes('.head').map((n) => ({
    id: n.id(), label: n.style('label'), px: parseFloat(n.style('font-size')) * zoom,
    text: n.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: true }),
    node: n.boundingBox({ includeLabels: false }),
  }));
}"""


class Page:
    """One browser tab on the viewer, recording its requests and console errors."""

    def __init__(self, context: Any, server: Server) -> None:
        self.server = server
        self.page = context.new_page()
        self.requests: list[tuple[str, str]] = []
        self.queries: list[dict[str, Any]] = []  # the GraphQL requests, in order
        self.errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _request(self, r: Any) -> None:
        self.requests.append((r.method, r.url))
        if r.method == "POST" and urlsplit(r.url).path == "/graphql":
            self.queries.append(json.loads(r.post_data))

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.server.url}/{fragment}")
        self.page.wait_for_selector("#models button[data-model]")

    def wait_drawn(self, model: str | None = None) -> None:
        which = f'[data-model="{model}"]' if model else ""
        self.page.wait_for_selector(f'#graph{which}[aria-busy="false"]')

    def select_model(self, name: str) -> None:
        self.page.click(f'#models button[data-model="{name}"]')
        self.wait_drawn(name)

    def drawn_edges(self) -> list[dict[str, Any]]:
        return self.page.evaluate("headgraphViewer.cy.edges().map((e) => e.data())")

    def drawn_nodes(self) -> list[str]:
        return self.page.evaluate("headgraphViewer.cy.nodes().map((n) => n.id())")

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

    def zoom(self, level: float) -> str:
        """Zoom the drawing to ``level`` about its centre; the label level that follows."""
        return self.page.evaluate(
            """(level) => new Promise((resolve) => {
                 const cy = headgraphViewer.cy;
                 cy.zoom({ level, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } });
                 requestAnimationFrame(() => requestAnimationFrame(
                   () => resolve(document.querySelector('#graph').dataset.labels)));
               })""", level)

    def labels(self) -> list[dict[str, Any]]:
        return self.page.evaluate(LABELS_JS)

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
