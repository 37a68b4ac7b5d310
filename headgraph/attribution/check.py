"""``headgraph check`` for attribution graphs: every stored graph is whole
(:func:`graph_problems`, run by :mod:`headgraph.maintenance` beside the core checks of
:mod:`headgraph.schema.check`)."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text


def graph_problems(conn: Connection) -> list[str]:
    """What is wrong with the stored attribution graphs, one line each:

    * counts: ``n_nodes`` nodes numbered ``nid`` 0..n-1, the ``n_pinned`` tokens and logits
      first, ``n_links`` rows in each link table, every ``idx`` 0..n_links-1 once, the same
      links in both (equal sums of source and of target), every end a stored node;
    * influence: ``score >= 0`` and ``cum`` in [0, 1]; every weight and the file's
      numbers (``influence``, ``activation``, ``token_prob``) finite;
    * heights (graphs stored with them, ``levels`` not NULL): each link's ``target_height``
      is its target's height, every source of a link of non-zero weight is higher than
      its target (the graph is acyclic and the heights right; links of weight 0 carry no
      influence and may close cycles, :func:`~headgraph.attribution.pruning.influence_and_heights`),
      every height below ``levels``;
    * the stored default view (``pruned_k`` not NULL): exactly the links between the first
      ``pruned_k`` nids, edge scores non-negative and largest first, shares in [0, 1];
    * no orphan rows in the node and link tables.
    """
    problems: list[str] = []
    seen = inspect(conn)  # a file older than the height columns has none
    if not seen.has_table("attribution_graphs"):
        return problems

    def column(table: str, name: str) -> str:
        present = {c["name"] for c in seen.get_columns(table)}
        return name if name in present else "CAST(NULL AS INTEGER)"

    graphs = {r[0]: r[1:] for r in conn.execute(text(
        "SELECT graph_id, model || '/' || slug, n_nodes, n_links, n_pinned, "
        f"{column('attribution_graphs', 'levels')}, "
        f"{column('attribution_graphs', 'pruned_k')} FROM attribution_graphs"))}
    nodes = {r[0]: r[1:] for r in conn.execute(text(
        "SELECT graph_id, count(*), count(DISTINCT nid), min(nid), max(nid), "
        "sum(CASE WHEN role >= 2 THEN 1 ELSE 0 END), max(CASE WHEN role >= 2 THEN nid END), "
        "sum(CASE WHEN score >= 0 AND cum >= 0 AND cum <= 1.000001 THEN 0 ELSE 1 END), "
        f"max({column('attribution_nodes', 'height')}) FROM attribution_nodes GROUP BY graph_id"))}
    links = {}
    for table in ("attribution_links", "attribution_out_links"):
        links[table] = {r[0]: r[1:] for r in conn.execute(text(
            f"SELECT graph_id, count(*), count(DISTINCT idx), min(idx), max(idx), "
            f"sum(CAST(source AS BIGINT)), sum(CAST(target AS BIGINT)), "
            f"least(min(source), min(target)), greatest(max(source), max(target)) "
            f"FROM {table} GROUP BY graph_id"))}
    for gid, (slug, n_nodes, n_links, n_pinned, levels, _) in graphs.items():
        found = nodes.get(gid, (0, 0, None, None, 0, None, 0, None))
        count, distinct, lo, hi, pinned, last_pinned, bad_scores, top = found
        if (count, distinct) != (n_nodes, n_nodes) or (n_nodes and (lo, hi) != (0, n_nodes - 1)):
            problems.append(f"attribution graph {slug!r}: {count} node rows, nid not 0.."
                            f"{n_nodes - 1} once each (n_nodes {n_nodes})")
        if pinned != n_pinned or (last_pinned is not None and last_pinned >= n_pinned):
            problems.append(f"attribution graph {slug!r}: {pinned} tokens and logits, not the "
                            f"first {n_pinned} nids")
        if bad_scores:
            problems.append(f"attribution graph {slug!r}: {bad_scores} node(s) with a negative "
                            "or NaN influence or a share outside [0, 1]")
        shapes = [links[tb].get(gid, (0, 0, None, None, None, None, None, None)) for tb in links]
        for (tb, shape) in zip(links, shapes, strict=True):
            c, d, i_lo, i_hi, _, _, e_lo, e_hi = shape
            if (c, d) != (n_links, n_links) or (n_links and (i_lo, i_hi) != (0, n_links - 1)):
                problems.append(f"attribution graph {slug!r}: {c} rows in {tb}, idx not 0.."
                                f"{n_links - 1} once each (n_links {n_links})")
            if n_links and (e_lo < 0 or e_hi >= n_nodes):
                problems.append(f"attribution graph {slug!r}: {tb} names nodes that are not "
                                "stored")
        finite = ("BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308")  # NaN: no
        bad = conn.execute(text(
            f"SELECT (SELECT count(*) FROM attribution_links WHERE graph_id = :g AND NOT "
            f"(weight {finite})) + (SELECT count(*) FROM attribution_nodes WHERE graph_id = :g "
            f"AND (NOT (coalesce(influence, 0) {finite}) OR NOT (coalesce(activation, 0) "
            f"{finite}) OR NOT (coalesce(token_prob, 0) {finite})))"), {"g": gid}).scalar_one()
        if bad:
            problems.append(f"attribution graph {slug!r}: {bad} link weight(s) or node "
                            "value(s) that are not finite (an answer holding one would not "
                            "be JSON); import the file again")
        if shapes[0][4:6] != shapes[1][4:6]:
            problems.append(f"attribution graph {slug!r}: attribution_links and "
                            "attribution_out_links hold different links")
        if levels is not None:
            if top is not None and top >= levels:
                problems.append(f"attribution graph {slug!r}: a node height >= levels "
                                f"({levels})")
            wrong = conn.execute(text(
                "SELECT count(*) FROM attribution_links l "
                "JOIN attribution_nodes s ON s.graph_id = l.graph_id AND s.nid = l.source "
                "JOIN attribution_nodes d ON d.graph_id = l.graph_id AND d.nid = l.target "
                "WHERE l.graph_id = :g AND (l.target_height IS NULL "
                "OR l.target_height <> d.height OR (s.height <= d.height AND l.weight <> 0))"),
                {"g": gid}
            ).scalar_one()
            if wrong:
                problems.append(f"attribution graph {slug!r}: {wrong} link(s) whose heights "
                                "are wrong (target_height not the target's, or a source not "
                                "above its target)")
    problems.extend(_default_view_problems(conn, graphs))
    for table in ("attribution_nodes", "attribution_links", "attribution_out_links",
                  "attribution_pruned_links"):
        if not seen.has_table(table):
            continue
        orphans = conn.execute(text(
            f"SELECT count(*) FROM {table} c WHERE NOT EXISTS "
            "(SELECT 1 FROM attribution_graphs g WHERE g.graph_id = c.graph_id)")).scalar_one()
        if orphans:
            problems.append(f"{orphans} orphan row(s) in {table}")
    return problems


def _default_view_problems(conn: Connection, graphs: dict) -> list[str]:
    """The stored default views (``attribution_pruned_links``) against their graphs."""
    problems = []
    for gid, (slug, *_, pruned_k) in graphs.items():
        if pruned_k is None:
            continue
        want = conn.execute(text(
            "SELECT count(*), count(DISTINCT idx) FROM attribution_links WHERE graph_id = :g "
            "AND source < :k AND target < :k"), {"g": gid, "k": pruned_k}).one()
        have = conn.execute(text(
            "SELECT count(*), count(DISTINCT p.idx), count(l.idx), "
            "sum(CASE WHEN p.edge_score >= 0 AND p.share >= 0 AND p.share <= 1.000001 "
            "THEN 0 ELSE 1 END) FROM attribution_pruned_links p LEFT JOIN attribution_links l "
            "ON l.graph_id = p.graph_id AND l.idx = p.idx AND l.source = p.source "
            "AND l.target = p.target AND l.source < :k AND l.target < :k "
            "WHERE p.graph_id = :g"), {"g": gid, "k": pruned_k}).one()
        if tuple(have[:3]) != (want[0], want[1], want[0]):
            problems.append(f"attribution graph {slug!r}: the stored default view holds "
                            f"{have[0]} links, not the {want[0]} between its first "
                            f"{pruned_k} nodes")
        if have[3]:
            problems.append(f"attribution graph {slug!r}: {have[3]} stored default-view "
                            "link(s) with a negative score or a share outside [0, 1]")
        order = conn.execute(text(
            "SELECT count(*) FROM (SELECT edge_score, share, lag(edge_score) OVER w AS e, "
            "lag(share) OVER w AS s FROM attribution_pruned_links WHERE graph_id = :g "
            "WINDOW w AS (ORDER BY share, edge_score DESC)) x WHERE e < edge_score OR "
            "s > share"), {"g": gid}).scalar_one()
        if order:
            problems.append(f"attribution graph {slug!r}: the stored default view's shares "
                            "do not follow its scores, largest first")
    return problems
