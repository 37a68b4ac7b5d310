"""The cost of a GraphQL document, known before it runs (headgraph/api/cost.py and
admission.py): list sizes multiplied down the tree, fragments expanded as the executor
collects them, variables and declared sizes used, introspection costed from the schema;
documents over max_cost, or repeating a field, refused with LIMIT_EXCEEDED and nothing
run; and the Host / cross-site checks of headgraph/api/origin.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from graphql import get_introspection_query, parse
from support import benchmark_module

from headgraph.api.cost import MAX_FIELD_REPEATS, PlanError, document_plan, introspection_sizes
from headgraph.api.cost import named_sizes as sizes_of
from headgraph.api.origin import cross_site, host_allowed
from headgraph.api.settings import Settings
from headgraph.server import make_service, served_schema

SCHEMA = served_schema()._schema
SIZES = sizes_of(Settings(), {"models": 3, "nodes": 13, "heads": 8, "circuits": 2})


def cost(query: str, variables: dict | None = None, sizes: dict | None = None) -> int:
    plan = document_plan(SCHEMA, parse(query), None)
    assert plan is not None
    return plan.cost(variables, sizes or SIZES, introspection_sizes(SCHEMA))


FEEDERS = '{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 10) { score } } }'


def test_list_sizes_multiply_down_the_tree():
    # node 1 + feeders (1 + 10 x (1 item + 1 score))
    assert cost(FEEDERS) == 1 + 1 + 10 * 2
    nested = ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 10) { source { '
              'readers(kind: V, top: 10) { score } } } } }')
    assert cost(nested) == 2 + 10 * (1 + 1 + (1 + 10 * 2))  # the module doc's example: 232
    assert cost(FEEDERS.replace("top: 10", "top: $t").replace("{ node", "query($t: Int) { node"),
                {"t": 500}) == 2 + 500 * 2
    # an omitted top is the schema's default (10); a variable that is no Int is its default
    assert cost(FEEDERS.replace(", top: 10", "")) == cost(FEEDERS)
    assert cost(FEEDERS.replace("top: 10", "top: $t").replace("{ node", "query($t: Int) { node"),
                {"t": "many"}) == cost(FEEDERS)


def test_declared_sizes_and_the_databases_own():
    heads = '{ model(name: "toy") { heads { name } } }'
    assert cost(heads) == 1 + 1 + 8 * 2  # the most heads of a stored model
    assert cost(heads.replace("heads {", "heads(first: 3) {")) == 2 + 3 * 2
    page = '{ model(name: "toy") { edges(first: 50) { edges { cursor } totalCount } } }'
    assert cost(page) == 1 + 1 + (1 + 50 * 2) + 1  # a connection's edges: its first
    paths = '{ model(name: "toy") { paths(target: "L1H2", top: 5) { nodes { name } } } }'
    assert cost(paths) == 2 + 5 * (1 + 1 + 7 * 2)  # at most 7 nodes on a path
    one_hop = '{ node(model: "toy", name: "L1H2") { circuit(depth: 1) { edges { score } } } }'
    assert cost(one_hop) == 2 + 1 + 5 * 13 * 2  # the root's feeders of every kind
    deep = one_hop.replace("depth: 1", "depth: 3")
    assert cost(deep) == 2 + 1 + min(5000, 5 * 13 * 13) * 2


def fan_out(levels: int) -> str:
    return benchmark_module("hostile_load").fan_out_document("toy", "L1H2", levels)


def test_fragments_are_expanded_as_the_executor_merges_them():
    assert cost(fan_out(4)) > 8_000_000  # the document that froze the server: refused
    spread_twice = ('{ node(model: "toy", name: "L1H2") { ...A ...A name } } '
                    'fragment A on Node { name feeders(kind: K) { score } }')
    assert cost(spread_twice) == cost('{ node(model: "toy", name: "L1H2") { name '
                                      'feeders(kind: K) { score } } }')
    # 2^60 spreads of one field plan in linear time and cost what the executor runs
    frags = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(60))
    doc = "{ ...F0 } " + frags + " fragment F60 on Query { models { name } }"
    t = time.perf_counter()
    assert cost(doc) == cost("{ models { name } }")
    assert time.perf_counter() - t < 1.0


def test_a_field_repeated_in_one_selection_is_refused_before_validation():
    body = "feeders(kind: K) { score } " * (MAX_FIELD_REPEATS + 1)
    with pytest.raises(PlanError, match="`feeders` 21 times"):
        document_plan(SCHEMA, parse('{ node(model: "toy", name: "L1H2") { ' + body + "} }"),
                      None)
    fine = "feeders(kind: K) { score } " * MAX_FIELD_REPEATS
    assert document_plan(SCHEMA, parse('{ node(model: "toy", name: "L1H2") { ' + fine + "} }"),
                         None) is not None


def test_introspection_is_costed_from_the_schema():
    assert cost(get_introspection_query()) < Settings().max_cost  # GraphiQL's own query
    bomb = ("{ __schema { types { fields { type { fields { type { fields { type { fields "
            "{ name } } } } } } } } } }")
    assert cost(bomb) > 10 * Settings().max_cost


@pytest.fixture(scope="module")
def service(toy_db: Path):
    s = make_service(toy_db, Settings(max_cost=1000))
    yield s
    s.close()


def test_over_max_cost_is_refused_with_the_estimate_and_nothing_runs(service):
    out = service.execute_sync(fan_out(4))
    (error,) = out.body["errors"]
    assert out.body["data"] is None and error["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert "max_cost" in error["message"] and "8," in error["message"]
    assert service.execute_sync(FEEDERS).ok  # under it: answered
    repeated = service.execute_sync('{ models { ' + "name " * 30 + "} }")
    assert repeated.body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


# --- who is asking ----------------------------------------------------------------------

def scope(headers: dict[str, str], server: tuple[str, int] = ("127.0.0.1", 8000)) -> dict:
    return {"headers": [(k.encode(), v.encode()) for k, v in headers.items()], "server": server}


@pytest.mark.parametrize(("host", "allowed", "ok"), [
    ("localhost:8000", (), True), ("127.0.0.1", (), True), ("[::1]:8000", (), True),
    ("LOCALHOST.", (), True), ("attacker.example", (), False),
    ("attacker.example:8000", (), False), ("10.0.0.5:8000", (), False),
    ("lab.example.org", ("lab.example.org",), True), ("anything", ("*",), True),
])
def test_host_names_the_server_or_is_refused(host: str, allowed: tuple, ok: bool):
    assert host_allowed(scope({"host": host}), allowed) is ok


def test_the_address_a_client_connected_to_is_a_host_name_of_the_server():
    assert host_allowed(scope({"host": "10.0.0.5:8000"}, ("10.0.0.5", 8000)), ())
    assert host_allowed(scope({}), ())  # HTTP/1.0 without a Host


@pytest.mark.parametrize(("headers", "origins", "flagged"), [
    ({"sec-fetch-site": "cross-site"}, (), True),
    ({"sec-fetch-site": "same-site"}, (), True),
    ({"sec-fetch-site": "same-origin"}, (), False),
    ({"sec-fetch-site": "none"}, (), False),  # typed in the address bar
    ({"sec-fetch-site": "cross-site", "content-type": "application/json"}, (), False),
    ({"sec-fetch-site": "cross-site", "origin": "https://lab.org"}, ("https://lab.org",), False),
    ({"origin": "https://evil.example", "host": "127.0.0.1:8000"}, (), True),
    ({"origin": "null", "host": "127.0.0.1:8000"}, (), True),
    ({"origin": "http://127.0.0.1:8000", "host": "127.0.0.1:8000"}, (), False),
    ({}, (), False),  # curl, scripts
])
def test_cross_site_requests_are_those_a_browser_says_another_site_sent(
        headers: dict, origins: tuple, flagged: bool):
    assert cross_site(scope(headers), origins) is flagged
