"""Persisted documents: automatic persisted queries (APQ) and trusted documents.

Automatic persisted queries follow Apollo's protocol: a request may carry
`extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}` instead of its query
text. A known hash runs the stored document; an unknown one is answered with the error
`PersistedQueryNotFound` (code `PERSISTED_QUERY_NOT_FOUND`), on which Apollo Client, urql
and others send the query text along with the hash once. The server checks that the hash
is the text's SHA-256, stores the document (only when it parses and passes validation
and the abuse limits: garbage is never stored) and runs it. Hashed requests work over
GET too (`?extensions=...&variables=...`), so CDNs can cache them; GET still runs queries
only. `documentId` (`"sha256:<hex>"` or `"<hex>"`) looks documents up in the same store.

Documents are kept in process memory (a bounded LRU) or, with REDIS_URL, in Redis
(`<prefix>:apq:<hash>`, expiring after `SHOPQL_APQ_TTL` seconds) shared by every process,
with each process's LRU in front: a hash names its text forever, so the copy never goes
stale, and a text read from Redis is checked against its hash before it runs.

Trusted documents (`SHOPQL_TRUSTED_DOCUMENTS=manifest.json`): only the documents of the
manifest run. The manifest is a JSON object of document ID -> document text, as
graphql-codegen's client preset (`persistedDocuments`) and relay-compiler's local
`persistConfig` write it (Apollo's `persisted-query-manifest.json` is read too). Requests
name a document by `documentId` (client preset), `doc_id` or `id` (Relay), or the APQ
hash; a request with a query text runs only when that text is a manifest document.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson
from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, validate
from graphql.language import BREAK, VisitorAction
from graphql.utilities import get_operation_ast
from graphql.validation import ASTValidationRule
from redis.exceptions import RedisError
from starlette.requests import Request
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLRequestData

from models.settings import QueryLimits, Settings, SettingsError
from schema.limits import operation_cost, validation_rules

logger = logging.getLogger("shopql.persisted")

MAX_DOCUMENT_BYTES = 64 * 1024  # larger documents run but are never stored
MEMORY_STORE_BYTES = 32 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"  # the message Apollo Client retries on
ID_FIELDS = ("documentId", "doc_id", "id")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DOCUMENT_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_SHA256_PREFIX = "sha256:"
UNTRUSTED_MESSAGE = (
    "Only trusted documents run on this server: send the ID of a document of the manifest "
    "(documentId, doc_id or the persistedQuery hash) instead of its text."
)


class PersistedQueryError(Exception):
    """A persisted-document request refused before anything runs."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def graphql_error(self) -> GraphQLError:
        return GraphQLError(self.message, extensions={"code": self.code})


def _not_found() -> PersistedQueryError:
    return PersistedQueryError(NOT_FOUND_MESSAGE, "PERSISTED_QUERY_NOT_FOUND")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class DocumentStore(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, document: str) -> None: ...


class MemoryDocumentStore:
    """The documents of one process, least recently used dropped first: at most
    `max_entries` documents and `max_bytes` of text."""

    def __init__(self, *, max_entries: int, max_bytes: int = MEMORY_STORE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = 0
        self._documents: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._documents)

    async def get(self, key: str) -> str | None:
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
        return document

    async def put(self, key: str, document: str) -> None:
        if key in self._documents:
            self._documents.move_to_end(key)
            return
        self._documents[key] = document
        self.size += len(document)
        while len(self._documents) > self.max_entries or self.size > self.max_bytes:
            _, dropped = self._documents.popitem(last=False)
            self.size -= len(dropped)


class RedisDocumentStore:
    """Documents shared by every process through Redis, each process's LRU in front.
    Redis errors count as misses (the client sends the text again) and are logged."""

    def __init__(self, client: Any, *, prefix: str, ttl: int, local: MemoryDocumentStore) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.local = local

    async def get(self, key: str) -> str | None:
        document = await self.local.get(key)
        if document is not None:
            return document
        try:
            raw = await self.client.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            logger.warning("persisted queries: Redis unavailable, treated as a miss: %s", exc)
            return None
        if raw is None:
            return None
        try:
            document = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            return None
        if sha256_hex(document) != key:  # not what this hash names: never run it
            logger.warning("persisted queries: Redis entry %s does not match its hash", key)
            return None
        await self.local.put(key, document)
        return document

    async def put(self, key: str, document: str) -> None:
        await self.local.put(key, document)
        try:
            await self.client.set(self.prefix + key, document.encode("utf-8"), ex=self.ttl)
        except (RedisError, OSError) as exc:
            logger.warning("persisted queries: Redis unavailable, stored locally only: %s", exc)


def _manifest_entries(data: object) -> Mapping[str, object]:
    if isinstance(data, dict) and data.get("format") == "apollo-persisted-query-manifest":
        operations = data.get("operations")
        if not isinstance(operations, list):
            raise ValueError("an Apollo manifest needs an `operations` list")
        entries: dict[str, object] = {}
        for operation in operations:
            if not isinstance(operation, dict):
                raise ValueError("each Apollo manifest operation must be an object")
            entries[str(operation.get("id"))] = operation.get("body")
        return entries
    if not isinstance(data, dict):
        raise ValueError("the manifest must be a JSON object of document ID -> document text")
    return data


def _normalized_id(document_id: str) -> str:
    if document_id.startswith(_SHA256_PREFIX):
        document_id = document_id[len(_SHA256_PREFIX) :]
    return document_id.lower() if _SHA256.fullmatch(document_id) else document_id


def load_manifest(path: str) -> dict[str, str]:
    """The trusted documents of a manifest file (document ID -> text). SettingsError,
    naming the file and the problem, when it cannot be used."""
    where = f"SHOPQL_TRUSTED_DOCUMENTS ({path})"
    try:
        file = Path(path)
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise SettingsError(f"{where}: the manifest is larger than 64 MiB")
        raw = file.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read the manifest: {exc.strerror}") from None
    try:
        entries = _manifest_entries(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"{where}: not valid JSON: {exc}") from None
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    if not entries:
        raise SettingsError(f"{where}: the manifest holds no documents")
    documents: dict[str, str] = {}
    for document_id, text in entries.items():
        shown = document_id[:80]
        if not _DOCUMENT_ID.fullmatch(document_id):
            raise SettingsError(
                f"{where}: document ID {shown!r} must be 1-128 letters, digits, '_', '.', ':' "
                "or '-'"
            )
        if not isinstance(text, str) or not text.strip():
            raise SettingsError(f"{where}: document {shown!r} must be a non-empty string")
        try:
            parse(text)
        except GraphQLError as exc:
            raise SettingsError(
                f"{where}: document {shown!r} is not valid GraphQL: {exc.message}"
            ) from None
        documents[_normalized_id(document_id)] = text
    return documents


class PersistedDocuments:
    """Resolves the persisted-document forms of a request into its query text (or refuses
    it with a PersistedQueryError)."""

    def __init__(
        self,
        *,
        schema: GraphQLSchema,
        limits: QueryLimits,
        store: DocumentStore,
        trusted: Mapping[str, str] | None = None,
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.store = store
        self.trusted = trusted
        self._trusted_texts = frozenset(trusted.values()) if trusted is not None else None
        self._rules = validation_rules(limits)

    async def resolve(self, request: Request, data: GraphQLRequestData) -> GraphQLRequestData:
        query = data.query
        extensions = data.extensions
        if self.trusted is None and not extensions and query is not None:
            return data  # a plain query: nothing to look up
        key = _persisted_hash(extensions)
        if key is None and query is None:
            key = await _document_id(request)
        if self.trusted is not None:
            return self._trusted(data, key)
        if key is None:
            return data
        if query is None:
            document = await self.store.get(key) if _SHA256.fullmatch(key) else None
            if document is None:
                raise _not_found()
            return dataclasses.replace(data, query=document)
        if sha256_hex(query) != key:
            raise PersistedQueryError(
                "The persisted query's sha256Hash does not match its query: it must be the "
                "SHA-256 of the query text (UTF-8, lowercase hex). Nothing was stored."
            )
        if self._storable(query, data):
            await self.store.put(key, query)
        return data

    def _trusted(self, data: GraphQLRequestData, key: str | None) -> GraphQLRequestData:
        assert self.trusted is not None and self._trusted_texts is not None
        if key is not None:
            document = self.trusted.get(key)
            if document is None:
                raise _not_found()
            if data.query is not None and data.query != document:
                raise PersistedQueryError(
                    "The query text is not the trusted document its ID names."
                )
            return dataclasses.replace(data, query=document)
        if data.query is None or data.query in self._trusted_texts:
            return data
        raise PersistedQueryError(UNTRUSTED_MESSAGE, "PERSISTED_QUERY_NOT_FOUND")

    def _storable(self, query: str, data: GraphQLRequestData) -> bool:
        """Whether the document parses and passes validation and the abuse limits (with
        this request's variables): only such documents are stored."""
        if len(query) > MAX_DOCUMENT_BYTES or len(query.encode("utf-8", "replace")) > (
            MAX_DOCUMENT_BYTES
        ):
            return False
        try:
            document = parse(query, max_tokens=self.limits.max_tokens)
        except GraphQLError:
            return False
        if validate(self.schema, document, self._rules):
            return False
        operation = get_operation_ast(document, data.operation_name)
        if operation is None:
            return False
        try:
            cost = operation_cost(self.schema, document, operation, data.variables)
        except (TypeError, ValueError, RecursionError):
            return False
        return cost <= self.limits.max_cost


def _persisted_hash(extensions: Mapping[str, Any] | None) -> str | None:
    """The SHA-256 (lowercase hex) of `extensions.persistedQuery`, None without one."""
    if not extensions or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict):
        raise PersistedQueryError(
            'extensions.persistedQuery must be an object: {"version": 1, "sha256Hash": "<hex>"}'
        )
    version = persisted.get("version")
    if type(version) is not int or version != 1:
        raise PersistedQueryError(
            "Unsupported persisted query version: extensions.persistedQuery.version must be 1."
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise PersistedQueryError(
            "extensions.persistedQuery.sha256Hash must be a SHA-256 digest: 64 hexadecimal "
            "characters."
        )
    return digest.lower()


async def _document_id(request: Request) -> str | None:
    """`documentId`, `doc_id` or `id` of a request without query text (query parameters
    for GET, the JSON body for POST), normalized; None when it names no document."""
    value: object = None
    if request.method == "GET":
        for name in ID_FIELDS:
            if name in request.query_params:
                value = request.query_params[name]
                break
    else:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        if isinstance(body, dict):
            for name in ID_FIELDS:
                if body.get(name) is not None:
                    value = body[name]
                    break
    if value is None:
        return None
    if not isinstance(value, str) or not _DOCUMENT_ID.fullmatch(value):
        raise PersistedQueryError(
            "documentId (doc_id, id) must be a string of 1-128 letters, digits, '_', '.', "
            "':' or '-'."
        )
    return _normalized_id(value)


class _UntrustedDocumentRule(ASTValidationRule):
    """Refuses the whole document (used only for documents outside the manifest)."""

    def enter_document(self, _node: DocumentNode, *_args: Any) -> VisitorAction:
        self.report_error(
            GraphQLError(UNTRUSTED_MESSAGE, extensions={"code": "PERSISTED_QUERY_NOT_FOUND"})
        )
        return BREAK


def _trusted_only(texts: frozenset[str]) -> type[SchemaExtension]:
    """An extension refusing, in validation, every operation whose text is not a trusted
    document: whatever the transport (subscriptions over WebSocket included)."""

    class TrustedDocumentsExtension(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            context = self.execution_context
            if context.query not in texts:
                context.validation_rules = (_UntrustedDocumentRule,)
            yield

    return TrustedDocumentsExtension


def persisted_documents(schema: Any, settings: Settings, redis: Any = None) -> PersistedDocuments:
    """The persisted documents of an app (`schema`: its strawberry schema): the trusted
    manifest when configured, enforced for every operation on any transport; else APQ in
    Redis when the app has a Redis client, else in process memory."""
    local = MemoryDocumentStore(max_entries=settings.apq_cache_size)
    store: DocumentStore = local
    if redis is not None:
        store = RedisDocumentStore(
            redis, prefix=f"{settings.redis_prefix}:apq:", ttl=settings.apq_ttl, local=local
        )
    trusted = load_manifest(settings.trusted_documents) if settings.trusted_documents else None
    if trusted is not None:  # after the other extensions: its rule replaces theirs
        schema.extensions = (*schema.extensions, _trusted_only(frozenset(trusted.values())))
    return PersistedDocuments(
        schema=schema._schema, limits=settings.query_limits, store=store, trusted=trusted
    )
