"""Parse and validate each distinct operation text once per process.

Storefronts send the same few documents over and over (with different variables); parsing
and validating one is a large share of a request (18 ms of the category page's 34 ms in a
profile, more than executing it). This extension keeps the parsed `DocumentNode` of every
document that *passed* validation, keyed by its exact text and the validation rules it
passed, in a bounded LRU. A cached document skips both steps; anything else (new text,
syntax errors, validation failures) takes the normal path every time, so hostile or broken
documents never enter the cache and cannot evict it faster than they can be sent anyway.

Cached documents are shared by concurrent requests: graphql-core's executor and our
FastExecutionContext only read the AST.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from graphql import DocumentNode
from strawberry.extensions import SchemaExtension

V = TypeVar("V")

DEFAULT_SIZE = 1000
# Longer texts are parsed every time: they are not what a storefront sends repeatedly.
MAX_CACHED_TEXT = 20_000


def schema_store(schema: Any, attr: str) -> dict[Any, Any]:
    """A dict kept on the schema object under `attr`: what is remembered about a
    schema's documents goes with it, rather than keeping every schema a process builds
    alive (the test suite builds one per app)."""
    store: dict[Any, Any] | None = schema.__dict__.get(attr)
    if store is None:
        store = {}
        setattr(schema, attr, store)
    return store


def remember(
    store: dict[int, tuple[Any, Any]], node: Any, compute: Callable[[], V], limit: int
) -> V:
    """`compute()`, remembered for this AST node (the cache hands out the same parsed
    documents, so a repeated document is one dictionary lookup). Entries are keyed by
    id(node) and keep the node, so its id is not reused while they live; the store starts
    over when it holds `limit`."""
    remembered = store.get(id(node))
    if remembered is not None and remembered[0] is node:
        value: V = remembered[1]
        return value
    value = compute()
    if len(store) >= limit:
        store.clear()
    store[id(node)] = (node, value)
    return value


class DocumentStore:
    """text -> (validation rules it passed, parsed document); least recently used first."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[Any, DocumentNode]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str, rules: Any) -> DocumentNode | None:
        entry = self._entries.get(text)
        # Rules are tuples of rule classes, equal when they hold the same classes (an
        # extension may rebuild the tuple per request).
        if entry is None or (entry[0] is not rules and entry[0] != rules):
            return None
        self._entries.move_to_end(text)
        self.hits += 1
        return entry[1]

    def peek(self, text: str, rules: Any) -> DocumentNode | None:
        """`get` without counting a hit or refreshing the entry (a look before the use)."""
        entry = self._entries.get(text)
        if entry is None or (entry[0] is not rules and entry[0] != rules):
            return None
        return entry[1]

    def put(self, text: str, rules: Any, document: DocumentNode) -> None:
        if len(text) > MAX_CACHED_TEXT or self.size <= 0:
            return
        self._entries[text] = (rules, document)
        self._entries.move_to_end(text)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class DocumentCache(SchemaExtension):
    """Per request (strawberry builds one per operation from `factory`); the store is
    shared by every request of one schema."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._cached = False

    @classmethod
    def factory(cls, store: DocumentStore | None = None) -> Callable[[], DocumentCache]:
        """One extension per request, all sharing `store` (a new one by default)."""
        shared = store if store is not None else DocumentStore()
        return lambda: cls(shared)

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        text = context.query
        if text and context.graphql_document is None:
            document = self.store.get(text, context.validation_rules)
            if document is not None:
                context.graphql_document = document  # strawberry then skips parsing
                self._cached = True
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._cached and context.pre_execution_errors is None:
            context.pre_execution_errors = []  # it passed these very rules before
        yield
        if (
            not self._cached
            and context.query
            and context.graphql_document is not None
            and context.pre_execution_errors == []
        ):
            self.store.put(context.query, context.validation_rules, context.graphql_document)
