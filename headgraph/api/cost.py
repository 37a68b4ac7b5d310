"""What a GraphQL document would cost, known before any resolver runs.

A document's **cost** is an upper estimate of the number of values its answer holds: each
field counts 1, and a field that returns a list counts its items (1 each) times the cost
of what is asked of each item. List sizes come from the field's slicing argument
(``top``, ``first``; a variable's value, or the argument's default) or, where there is
none, from the size declared with the field (:func:`sized`, kept in the strawberry
field's ``metadata``: a number, a setting, or one of the database's own sizes such as the
most heads of a stored model); a list with neither counts ``default_first`` items. The
cost is multiplied down the tree, so::

    node { feeders(kind: K, top: 10) { source { readers(kind: V, top: 10) { score } } } }

costs 1 + 1 + 10 x (1 + 1 + (1 + 10 x (1 + 1))) = 232. :func:`document_plan` reads the
document once, as the executor will run it: fragments expanded, fields with one response
key merged into one (their sub-selections together), each fragment collected once per
selection (graphql-core's ``collect_fields``), so a document whose fragments spread each
other 2^60 times plans in linear time and costs what it really asks. Plans are cached
with the document; :meth:`Plan.cost` evaluates one with the request's variables (a
slicing argument may be a variable), memoised per shared sub-plan.

Why: before this, ``node { ...N0 }`` with four levels of feeders/readers -> source/target
fragments (858 bytes, within every limit) asked for millions of nodes; the DataLoaders
answered them from a handful of rows (so ``max_rows`` never tripped) and the executor
spent minutes of the event loop building them. :mod:`headgraph.api.admission` refuses a
document whose cost is over ``max_cost`` (``LIMIT_EXCEEDED``), as GitHub's API refuses
one over its node limit.

The plan also bounds graphql-core's own validation: its rule that fields with one
response key can be merged compares every pair of them, so 300 copies of
``feeders(kind: K) { score }`` in one selection took half a second of the event loop to
validate. A response key repeated more than :data:`MAX_FIELD_REPEATS` times in one merged
selection is refused before that rule runs.

Introspection (``__schema``, ``__type``) is costed from the schema itself: a list of
``types`` counts the schema's types, and a list reached from every type (``fields`` of
``types``) counts the schema's average per type, a sum that is exact over all of them;
reached from one type (``__type(name:)``, a field's ``type``) it counts the largest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)

COST_KEY = "headgraph.cost"
MAX_FIELD_REPEATS = 20
"""Most fields one merged selection may hold under one response key (fragments counted
once each, as the executor collects them)."""
PLAN_STEPS = 100_000
"""Most fields a plan may collect; a document needing more is refused as too complex."""
INT_MAX = 2**31 - 1  # a larger literal is no GraphQL Int: validation refuses it (BAD_INPUT)

SizeFn = Callable[[Mapping[str, int], Mapping[str, int]], int]
Sizes = Mapping[str, int]
"""Named sizes a declaration may use: settings (``default_first``, ``max_first``,
``max_circuit_edges``) and the database's own (``models``, ``nodes``, ``heads``,
``circuits``: :func:`headgraph.queries.models.database_sizes`)."""


def named_sizes(settings: Any, database: Mapping[str, int] | None = None) -> dict[str, int]:
    """The :data:`Sizes` of a server: its settings, and the database's sizes where known
    (else ``max_first`` stands in for each)."""
    out = {"default_first": min(settings.default_first, settings.max_first),
           "max_first": settings.max_first, "max_circuit_edges": settings.max_circuit_edges}
    for name in ("models", "nodes", "heads", "circuits"):
        out[name] = (database or {}).get(name, settings.max_first)
    return out


@dataclass(frozen=True)
class Size:
    """How many items a field's list holds (or, for a field returning a page or view, how
    many its lists hold: ``slice`` passes to children declared with ``per_parent``).

    ``slicing``: the argument giving the size; ``assumed``: the size when the argument is
    absent or null (a number, or a name of :data:`Sizes` such as ``"max_first"`` or
    ``"heads"``); ``per_parent``: the size is this many times the parent field's slice (a
    connection's ``edges``); ``fn``: a size computed from the field's integer arguments
    (given or defaulted) and the :data:`Sizes`.
    """

    slicing: str | None = None
    assumed: int | str = "default_first"
    per_parent: int = 0
    fn: SizeFn | None = None

    def of(self, args: Mapping[str, int], parent: int | None, sizes: Sizes) -> int:
        if self.fn is not None:
            return self.fn(args, sizes)
        if self.per_parent and parent is not None:
            return self.per_parent * parent
        given = args.get(self.slicing) if self.slicing else None
        if given is not None:
            return given
        if isinstance(self.assumed, int):
            return self.assumed
        return sizes.get(self.assumed, sizes["default_first"])


def sized(slicing: str | None = None, assumed: int | str = "default_first", *,
          per_parent: int = 0, fn: SizeFn | None = None) -> dict[str, Size]:
    """``metadata=`` for a ``strawberry.field`` declaring its list size (see :class:`Size`).

    Examples
    --------
    >>> sized(assumed=3)[COST_KEY].of({}, None, {})
    3
    """
    return {COST_KEY: Size(slicing, assumed, per_parent, fn)}


DEFAULT_SLICING = ("top", "first")


def _size_of(definition: GraphQLField) -> Size | None:
    """The field's declared size; else its ``top``/``first`` argument; else ``None``."""
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    declared = getattr(strawberry_field, "metadata", None) or {}
    if COST_KEY in declared:
        return declared[COST_KEY]
    for name in DEFAULT_SLICING:
        if name in definition.args:
            return Size(slicing=name)
    return None


# --- introspection ----------------------------------------------------------------------

ALL, ONE = "all", "one"


@dataclass(frozen=True)
class _Introspection:
    """Sizes of the introspection lists of one schema: ``(average over all, largest)``."""

    sizes: Mapping[tuple[str, str], tuple[float, float]]
    n_types: int
    n_directives: int

    @classmethod
    def of(cls, schema: GraphQLSchema) -> _Introspection:
        types = list(schema.type_map.values())
        outputs = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
        fields = [f for t in outputs for f in t.fields.values()]
        dirs = list(schema.directives)

        def spread(counts: Sequence[int]) -> tuple[float, float]:
            return (sum(counts) / max(1, len(counts)), float(max(counts, default=0)))

        def each(make: Callable[[Any], int]) -> tuple[float, float]:
            return spread([make(t) for t in types])

        sizes = {
            ("__Type", "fields"): each(lambda t: len(t.fields) if t in outputs else 0),
            ("__Type", "inputFields"): each(
                lambda t: len(t.fields) if isinstance(t, GraphQLInputObjectType) else 0),
            ("__Type", "interfaces"): each(lambda t: len(getattr(t, "interfaces", ()) or ())),
            ("__Type", "possibleTypes"): each(
                lambda t: len(schema.get_possible_types(t))
                if isinstance(t, GraphQLInterfaceType | GraphQLUnionType) else 0),
            ("__Type", "enumValues"): each(
                lambda t: len(t.values) if isinstance(t, GraphQLEnumType) else 0),
            ("__Field", "args"): spread([len(f.args) for f in fields]),
            ("__Directive", "args"): spread([len(d.args) for d in dirs]),
            ("__Directive", "locations"): spread([len(d.locations) for d in dirs]),
        }
        return cls(sizes, len(types), len(dirs))

    def size(self, parent: str, name: str, population: str) -> tuple[float, str]:
        """(items, their population) of list field ``parent.name`` over ``population``."""
        if (parent, name) == ("__Schema", "types"):
            return float(self.n_types), ALL
        if (parent, name) == ("__Schema", "directives"):
            return float(self.n_directives), ALL
        mean, most = self.sizes.get((parent, name), (0.0, 0.0))
        return (mean, ALL) if population == ALL else (most, ONE)


# --- plans ------------------------------------------------------------------------------

ArgSource = int | str | None  # a literal Int, a variable's name, or absent/null


@dataclass
class Step:
    """One merged field of a selection: its response key and what it returns."""

    key: str
    name: str
    parent_type: str
    is_list: bool
    size: Size | None
    args: tuple[dict[str, ArgSource], ...]  # one per merged field node
    defaults: dict[str, int]  # the schema's integer argument defaults
    child: Plan | None


@dataclass
class Plan:
    """The merged selection of one object type (shared between parents that ask the
    same fragments)."""

    type_name: str
    steps: list[Step] = field(default_factory=list)

    def cost(self, variables: Mapping[str, Any] | None, sizes: Sizes,
             introspection: _Introspection) -> int:
        """The document's cost with these variables (see the module doc)."""
        memo: dict[tuple[int, int | None, str], float] = {}
        return math.ceil(_cost(self, variables or {}, sizes, introspection, None, ONE,
                               memo))


def _cost(plan: Plan, variables: Mapping[str, Any], sizes: Sizes, intro: _Introspection,
          parent_slice: int | None, population: str,
          memo: dict[tuple[int, int | None, str], float]) -> float:
    key = (id(plan), parent_slice, population)
    if key in memo:
        return memo[key]
    total = 0.0
    for step in plan.steps:
        if step.name.startswith("__") or step.parent_type.startswith("__"):
            total += _introspection_cost(step, variables, sizes, intro, population, memo)
            continue
        ints = [{**step.defaults, **{name: v for name, src in args.items()
                                     if (v := _int_of(src, variables)) is not None}}
                for args in step.args] or [step.defaults]
        slices = [step.size.of(a, parent_slice, sizes) if step.size else None for a in ints]
        slice_ = max((s for s in slices if s is not None), default=None)
        if step.is_list:
            n = slice_ if slice_ is not None else sizes["default_first"]
            inner = _cost(step.child, variables, sizes, intro, None, ONE, memo) \
                if step.child else 0.0
            total += 1 + n * (1 + inner)
        else:
            total += 1 + (_cost(step.child, variables, sizes, intro, slice_, ONE, memo)
                          if step.child else 0.0)
    memo[key] = total
    return total


def _introspection_cost(step: Step, variables: Mapping[str, Any], sizes: Sizes,
                        intro: _Introspection, population: str,
                        memo: dict[tuple[int, int | None, str], float]) -> float:
    if step.is_list:
        n, items = intro.size(step.parent_type, step.name, population)
    else:
        n, items = 1.0, ONE
    inner = _cost(step.child, variables, sizes, intro, None, items, memo) \
        if step.child else 0.0
    return 1 + n * ((1 if step.is_list else 0) + inner)


def _int_of(source: ArgSource, variables: Mapping[str, Any]) -> int | None:
    if isinstance(source, str):
        value = variables.get(source)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT_MAX:
            return value
        return None  # absent, null or not an Int: its default applies, or coercion refuses
    return source


class PlanError(Exception):
    """A document that cannot be planned within the bounds (``LIMIT_EXCEEDED``)."""


class _Cycle(Exception):
    """Fragments that spread each other: no plan (graphql-core's rules refuse them)."""


@dataclass
class _Builder:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    memo: dict[tuple[str, tuple[int, ...]], Plan] = field(default_factory=dict)
    building: set[tuple[str, tuple[int, ...]]] = field(default_factory=set)
    steps: int = 0

    def plan(self, type_: GraphQLNamedType, selections: Sequence[SelectionSetNode]) -> Plan:
        key = (type_.name, tuple(id(s) for s in selections))
        if key in self.memo:
            return self.memo[key]
        if key in self.building:
            raise _Cycle  # fragments that spread themselves: validation refuses them
        self.building.add(key)
        plan = Plan(type_.name)
        groups: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selections:
            self._collect(selection_set, groups, visited)
        fields = getattr(type_, "fields", None) or {}
        for response_key, nodes in groups.items():
            if len(nodes) > MAX_FIELD_REPEATS:
                raise PlanError(
                    f"the document asks for `{response_key}` {len(nodes)} times in one "
                    f"selection of {type_.name}; at most {MAX_FIELD_REPEATS} are allowed "
                    "(ask for each field once).")
            name = nodes[0].name.value
            definition = _field(self.schema, type_, fields, name)
            child = None
            is_list = False
            size = None
            defaults: dict[str, int] = {}
            if definition is not None:
                is_list, named = _unwrap(definition.type)
                size = _size_of(definition)
                defaults = {a: arg.default_value for a, arg in definition.args.items()
                            if isinstance(arg.default_value, int)
                            and not isinstance(arg.default_value, bool)}
                sub = [n.selection_set for n in nodes if n.selection_set is not None]
                if sub and isinstance(named, GraphQLObjectType):
                    child = self.plan(named, sub)
            plan.steps.append(Step(response_key, name, type_.name, is_list, size,
                                   tuple(_args(n) for n in nodes), defaults, child))
        self.building.discard(key)
        self.memo[key] = plan
        return plan

    def _collect(self, selection_set: SelectionSetNode, groups: dict[str, list[FieldNode]],
                 visited: set[str]) -> None:
        for node in selection_set.selections:
            self.steps += 1
            if self.steps > PLAN_STEPS:
                raise PlanError(f"the document is too complex to plan (over {PLAN_STEPS:,} "
                                "fields once fragments are expanded).")
            if isinstance(node, FieldNode):
                key = node.alias.value if node.alias else node.name.value
                groups.setdefault(key, []).append(node)
            elif isinstance(node, InlineFragmentNode):
                self._collect(node.selection_set, groups, visited)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name in visited or name not in self.fragments:
                    continue  # collected once per selection; unknown: validation refuses
                visited.add(name)
                self._collect(self.fragments[name].selection_set, groups, visited)


def _field(schema: GraphQLSchema, parent: GraphQLNamedType,
           fields: Mapping[str, GraphQLField], name: str) -> GraphQLField | None:
    if name in fields:
        return fields[name]
    if name == "__schema" and parent is schema.query_type:
        from graphql import SchemaMetaFieldDef

        return SchemaMetaFieldDef
    if name == "__type" and parent is schema.query_type:
        from graphql import TypeMetaFieldDef

        return TypeMetaFieldDef
    return None  # __typename (a leaf), or unknown: validation refuses it


def _unwrap(type_: Any) -> tuple[bool, Any]:
    """(is a list, the named type) of an output type."""
    is_list = False
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        is_list |= isinstance(type_, GraphQLList)
        type_ = type_.of_type
    return is_list, type_


def _args(node: FieldNode) -> dict[str, ArgSource]:
    out: dict[str, ArgSource] = {}
    for arg in node.arguments or ():
        value = arg.value
        if isinstance(value, IntValueNode):
            number = int(value.value)
            out[arg.name.value] = number if 0 <= number <= INT_MAX else None
        elif isinstance(value, VariableNode):
            out[arg.name.value] = value.name.value
        elif isinstance(value, NullValueNode):
            out[arg.name.value] = None
    return out


def document_plan(schema: GraphQLSchema, document: DocumentNode,
                  operation_name: str | None) -> Plan | None:
    """The plan of the operation that will run (``None`` when the document names none that
    can be chosen: execution refuses it). Raises :class:`PlanError`."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1 or schema.query_type is None:
        return None
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    try:
        return _Builder(schema, fragments).plan(schema.query_type,
                                                [operations[0].selection_set])
    except _Cycle:
        return None
    except RecursionError:
        raise PlanError("the document nests too deeply to plan.") from None


_INTROSPECTION: dict[int, _Introspection] = {}


def introspection_sizes(schema: GraphQLSchema) -> _Introspection:
    """The schema's introspection list sizes (computed once per schema)."""
    found = _INTROSPECTION.get(id(schema))
    if found is None:
        found = _INTROSPECTION[id(schema)] = _Introspection.of(schema)
    return found
