// headgraph viewer: the search box. It matches a model's nodes by name ("L12H7", "l12",
// "mlp3", "H7") and by role ("induction", "prev"), lists the matches under the box (arrow
// keys and Enter, or a click, pick one) and tells the page which nodes match, so the drawing
// can mark them. It searches the whole model, drawn or not.

const SHOWN = 30; // matches listed; the count says how many more there are

/** Nodes matching `query`, best first: exact name, name prefix, role, role prefix, part of a name. */
export function findNodes(query, nodes) {
  const q = query.trim().toLowerCase().replace(/\s+/g, "_");
  if (!q) return [];
  const ranked = [];
  for (const node of nodes) {
    const name = node.name.toLowerCase();
    const roles = node.roles || [];
    let rank = -1;
    if (name === q) rank = 0;
    else if (name.startsWith(q)) rank = 1;
    else if (roles.includes(q)) rank = 2;
    else if (roles.some((r) => r.startsWith(q))) rank = 3;
    else if (name.includes(q)) rank = 4;
    if (rank >= 0) ranked.push({ node, rank });
  }
  ranked.sort((a, b) => a.rank - b.rank || a.node.index - b.node.index);
  return ranked.map((r) => r.node);
}

export class SearchBox {
  /**
   * `input` and `list` (a <ul>) are the box and its list; `nodes()` gives the model's nodes;
   * `onMatches(names)` is told the matching names as the text changes (an empty set when
   * cleared); `onPick(name)` is told the node picked.
   */
  constructor(input, list, { nodes, onMatches, onPick, describe }) {
    Object.assign(this, { input, list, nodes, onMatches, onPick, describe });
    this.matches = [];
    this.active = -1;
    input.addEventListener("input", () => this.search());
    input.addEventListener("keydown", (e) => this.key(e));
    input.addEventListener("focus", () => this.matches.length && this.open(true));
    input.addEventListener("blur", () => setTimeout(() => this.open(false), 150));
  }

  /** Run the search for the box's text again (after a model change, say). */
  search() {
    this.matches = findNodes(this.input.value, this.nodes());
    this.active = this.matches.length ? 0 : -1;
    this.render();
    this.onMatches(new Set(this.matches.map((n) => n.name)));
  }

  /** Search for `text` as if typed. */
  set(text) {
    this.input.value = text;
    this.search();
    this.input.focus();
  }

  clear() {
    this.set("");
    this.input.blur();
  }

  key(e) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (!this.matches.length) return;
      const n = Math.min(this.matches.length, SHOWN);
      this.active = (this.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.render();
    } else if (e.key === "Enter") {
      e.preventDefault();
      if (this.active >= 0) this.pick(this.matches[this.active].name);
    } else if (e.key === "Escape") {
      this.clear();
    }
  }

  pick(name) {
    this.open(false);
    this.onPick(name);
  }

  open(on) {
    this.list.hidden = !on || !this.input.value.trim();
    this.input.setAttribute("aria-expanded", String(!this.list.hidden));
  }

  render() {
    const items = this.matches.slice(0, SHOWN).map((node, i) => {
      const li = document.createElement("li");
      li.id = `match-${i}`;
      li.setAttribute("role", "option");
      li.dataset.name = node.name;
      li.setAttribute("aria-selected", String(i === this.active));
      const name = document.createElement("strong");
      name.textContent = node.name;
      li.append(name, ...this.describe(node));
      li.addEventListener("mousedown", (e) => {
        e.preventDefault(); // keep the focus in the box
        this.pick(node.name);
      });
      return li;
    });
    const count = document.createElement("li");
    count.className = "count";
    const n = this.matches.length;
    count.textContent = n === 0 ? "no node or role matches"
      : n > SHOWN ? `${n} matches, first ${SHOWN} shown` : `${n} match${n === 1 ? "" : "es"}`;
    this.list.replaceChildren(count, ...items);
    this.list.dataset.matches = String(n);
    this.input.setAttribute("aria-activedescendant", this.active >= 0 ? `match-${this.active}` : "");
    this.open(document.activeElement === this.input);
  }
}
