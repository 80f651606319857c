"""A faster graphql-core executor for the hot path: trivial fields are completed inline.

graphql-core completes every field the same general way: a `ResolveInfo` per field,
strawberry's resolver wrapper (its own `Info`, argument conversion, the extension chain),
awaitable checks and the generic `complete_value` dispatch. That costs ~3-4 us a field,
most of a 100-product listing. `FastExecutionContext` plans each selection set once per
request (per parent type and collected field set) and, field by field, either

- reads a plain attribute (a strawberry field without a resolver, extensions or
  permissions: what strawberry's own "basic field" resolver does), or
- calls a synchronous resolver that takes no GraphQL arguments and no `info`, only the
  parent object (what strawberry's resolver wrapper boils down to for such a field),

and completes the value inline when it is an exact built-in leaf value (`str` for
String/ID, `int` within 32 bits for Int, `bool`, finite `float`) or null where null is
allowed; enums and custom scalars go through the type's own `coerce_output_value` (via
graphql-core's `complete_leaf_value`). Anything else - an awaitable, an object or list,
a null in a non-null position, an exception value - is completed by graphql-core's own
code with the value already resolved, so errors, paths, locations and null propagation
are graphql-core's. Every other field (arguments, `info`, async resolvers, extensions,
DataLoader futures, introspection) runs through graphql-core unchanged.

The plan is only used when no middleware wraps resolvers (a strawberry extension with a
`resolve` hook sees every field, so it gets the stock path). Field classification reads
strawberry's resolver wrappers; when strawberry changes them the fields fall back to the
stock path (slower, still correct) and tests/test_execution_differential.py says so.
`tests/test_execution_differential.py` runs a query corpus through both executors and
requires identical results.

Fields marked with `mark_loaded` (schema.fields.loaded: a DataLoader keyed by an attribute)
call the loader directly; an object waits for its loaders' futures together, and a list
of objects whose items wait only for such futures waits for all its items in one
coroutine, not a task per item (`_await_loaded_list`).

A selection set whose every field is planned inline, met again in a later request (the
same parsed document: the document cache), is compiled (`_Compiler`): Python source that
completes the whole object, its nested objects and lists included, in one call, built
once per schema and selection. Where it meets anything it does not complete itself (a
null in a non-null field, a pending loader future, a value of another type, a resolver
that raises) it gives up and the generic path answers, errors included; the differential
test runs every document twice to compare both.

Its base, `RequestExecutionContext` (usable alone, with the stock field machinery), answers
only once nothing the operation started still runs: no DataLoader batch, no abandoned field,
no connection out of the pool (tests/test_request_teardown.py).
"""

from __future__ import annotations

import asyncio
import inspect
import operator
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from keyword import iskeyword
from math import isfinite
from operator import methodcaller
from types import CoroutineType, GeneratorType
from typing import Any, TypeGuard, cast
from uuid import UUID

import strawberry
from graphql import (
    ExecutionResult,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    GraphQLSchema,
    GraphQLString,
    is_leaf_type,
)
from graphql.execution.collect_fields import CollectedFields, FieldDetailsList, GroupedFieldSet
from graphql.pyutils import AwaitableOrValue, Path, Undefined, gather_with_cancel
from graphql.type.introspection import TypeNameMetaFieldDef
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.base import StrawberryMaybe, StrawberryOptional
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver

from models.db import RequestWork, end_request_work, run_inline, start_request_work
from schema.document_cache import remember, schema_store
from schema.scalars import serialize_decimal

__all__ = ["FastExecutionContext", "RequestExecutionContext", "mark_loaded", "mark_records"]

_GRAPHQL_MIN_INT = -(2**31)
_GRAPHQL_MAX_INT = 2**31 - 1

# How a field's value is fetched.
_SLOW = 0  # graphql-core's execute_field
_TYPENAME = 1  # __typename: the parent type's name
_ATTR = 2  # getattr(source, python_name) (strawberry's default resolver)
_DEFAULT_RESOLVER = 3  # field.default_resolver(source, python_name), a custom one
_CALL = 4  # resolver(source, **{parent: source}) / resolver(**{parent: source}): sync,
# no GraphQL arguments, no info
_CALL1 = 5  # the same, for a resolver whose one parameter takes the source positionally
_LOADER = 6  # loader(context).load(getattr(source, key)): a `loaded` field (schema.fields)

# `mark_loaded` puts (loader, key) on a resolver under this name: the resolver is exactly
# `None if (value := getattr(root, key)) is None else loader(info.context).load(value)`.
_LOADED_ATTR = "_shopql_loaded"


# `mark_records` puts a record class on an `is_type_of` function under this name: it is
# exactly `isinstance(obj, record_class)`, and ignores its info.
_RECORDS_ATTR = "_shopql_records"


def mark_records(is_type_of: Any, record_type: type) -> None:
    """Declare that `is_type_of(obj, info)` is `isinstance(obj, record_type)` (info unused),
    so the executor may test objects itself, without a ResolveInfo to call it with."""
    setattr(is_type_of, _RECORDS_ATTR, record_type)


def _records_of(object_type: GraphQLObjectType) -> type | None:
    """The record class of an object type whose is_type_of is marked (`mark_records`)."""
    is_type_of = object_type.is_type_of
    return None if is_type_of is None else getattr(is_type_of, _RECORDS_ATTR, None)


def _inline_object(object_type: Any) -> TypeGuard[GraphQLObjectType]:
    """An object type whose values need no ResolveInfo: no is_type_of, or a marked one."""
    return type(object_type) is GraphQLObjectType and (
        object_type.is_type_of is None or _records_of(object_type) is not None
    )


def mark_loaded(resolver: Any, loader: Callable[[Any], Any], key: str) -> None:
    """Declare that `resolver(root, info)` is `loader(info.context).load(root.<key>)` (null
    for a null key), so the executor may call the loader without strawberry's wrapper and
    wait for the DataLoader futures of one object together (no task per field)."""
    setattr(resolver, _LOADED_ATTR, (loader, key))


_FUTURE = asyncio.Future  # what DataLoader.load returns (the C implementation)
# Completed values that are never awaitable (what is_awaitable answers at once for them)
_PLAIN: frozenset[type] = frozenset({dict, list, str, int, float, bool, type(None)})
_OBJECT_GETATTRIBUTE = object.__getattribute__
_OBJECT_CLASS = object.__dict__["__class__"]
_MAX_SYNC_TYPES = 1000


def _never_awaitable(cls: type) -> bool:
    """Whether no instance of `cls` can be awaitable by graphql-core's test (a coroutine, an
    iterable coroutine, or something with `__await__`): not such a type, no `__await__`,
    no per-instance attributes (no instance dict) and no attribute hooks to add one, and
    the real `__class__`. Records, Money, Decimal, enums: the type decides, once."""
    return (
        not issubclass(cls, CoroutineType | GeneratorType)
        and getattr(cls, "__await__", None) is None
        and cls.__dictoffset__ == 0
        and cls.__getattribute__ is _OBJECT_GETATTRIBUTE
        and getattr(cls, "__getattr__", None) is None
        and inspect.getattr_static(cls, "__class__") is _OBJECT_CLASS
    )


_IsAwaitable = Callable[[Any], TypeGuard[Awaitable[Any]]]
# Types known never to be awaitable: the plain ones, C types without an instance dict
# whose attribute lookup _never_awaitable cannot see is the generic one, and the types
# _never_awaitable admits (bounded)
_SYNC_TYPES: set[type] = {*_PLAIN, Decimal, datetime, date, time, timedelta, UUID}
_BY_TYPE: dict[_IsAwaitable, _IsAwaitable] = {}


def _by_type(is_awaitable: _IsAwaitable) -> _IsAwaitable:
    """`is_awaitable`, answering from the value's type once the type is known never to
    be awaitable (optimized_is_awaitable does that for built-in types only; every record
    and Money paid two isinstance checks and a hasattr)."""
    wrapped = _BY_TYPE.get(is_awaitable)
    if wrapped is not None:
        return wrapped
    sync_types = _SYNC_TYPES

    def by_type(value: Any) -> TypeGuard[Awaitable[Any]]:
        cls = type(value)
        if cls in sync_types:
            return False
        if is_awaitable(value):
            return True
        if len(sync_types) < _MAX_SYNC_TYPES and _never_awaitable(cls):
            sync_types.add(cls)
        return False

    if len(_BY_TYPE) < 8:
        _BY_TYPE[is_awaitable] = by_type
    return by_type


def _released(*_args: Any) -> Any:
    raise RuntimeError("this operation has finished: its executor was released")


_RELEASED_HELPERS = GraphQLResolveInfoHelpers(gather=_released, track=_released)


class _NoType:
    """A type no value has: `type(value) is _NO_TYPE` is always false."""


_NO_TYPE = _NoType

# Which values a built-in scalar's coerce_output_value returns unchanged: (exact type,
# extra check or None). Only checked against graphql-core's own scalar objects and
# functions, so a replaced scalar takes the generic path.
_Exact = tuple[type, Callable[[Any], bool] | None]


def _int_in_range(value: int) -> bool:
    return _GRAPHQL_MIN_INT <= value <= _GRAPHQL_MAX_INT


_BUILTIN_EXACT: dict[int, tuple[GraphQLLeafType, Any, _Exact]] = {
    id(scalar): (scalar, scalar.coerce_output_value, exact)
    for scalar, exact in (
        (GraphQLString, (str, None)),
        (GraphQLID, (str, None)),
        (GraphQLBoolean, (bool, None)),
        (GraphQLInt, (int, _int_in_range)),
        (GraphQLFloat, (float, isfinite)),
    )
}


def _exact_of(leaf: GraphQLLeafType) -> _Exact | None:
    builtin = _BUILTIN_EXACT.get(id(leaf))
    if builtin is None or builtin[0] is not leaf or leaf.coerce_output_value is not builtin[1]:
        return None
    return builtin[2]


def _enum_names(leaf: GraphQLLeafType) -> tuple[type | None, dict[Any, str]]:
    """A strawberry enum's (Python class, {member: name its coerce_output_value gives}):
    that method compares the value with every member in turn; the answer per member is
    fixed, so it is asked once. (None, {}) for any other leaf type."""
    wrapped = getattr(leaf, "wrapped_cls", None)
    if not isinstance(leaf, GraphQLEnumType) or not (
        isinstance(wrapped, type) and issubclass(wrapped, Enum)
    ):
        return None, {}
    names: dict[Any, str] = {}
    for member in wrapped:
        name = _enum_name(leaf, member)
        if name is not None:
            names[member] = name
    return wrapped, names


def _enum_name(leaf: GraphQLEnumType, member: Enum) -> str | None:
    """The name coerce_output_value gives `member`; None when it fails (graphql-core's path
    then reports it, located) or gives no string."""
    try:
        name = leaf.coerce_output_value(member)
    except Exception:
        return None
    return name if type(name) is str else None


class _Leaf:
    """How to complete a leaf-typed (or list-of-leaf-typed) field's value inline."""

    __slots__ = (
        "coerce",
        "enum_names",
        "enum_type",
        "exact",
        "item_non_null",
        "leaf",
        "list_",
        "non_null",
    )

    def __init__(self, return_type: GraphQLOutputType) -> None:
        self.non_null = isinstance(return_type, GraphQLNonNull)
        inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
        self.list_ = isinstance(inner, GraphQLList)
        self.item_non_null = False
        if isinstance(inner, GraphQLList):
            inner = inner.of_type
            self.item_non_null = isinstance(inner, GraphQLNonNull)
            if isinstance(inner, GraphQLNonNull):
                inner = inner.of_type
        assert is_leaf_type(inner)
        self.leaf: GraphQLLeafType = inner
        self.exact = _exact_of(inner)
        self.coerce = inner.coerce_output_value
        self.enum_type, self.enum_names = _enum_names(inner)


_ISOFORMAT = "operator.methodcaller('isoformat')"


def _direct_scalar(leaf: _Leaf) -> type | None:
    """The Python type whose values this custom scalar serializes without any way to
    fail or answer null: Decimal (schema.scalars.serialize_decimal, a string) and
    strawberry's DateTime (`datetime.isoformat`). None for any other leaf type."""
    coerce = leaf.coerce
    if coerce is serialize_decimal:
        return Decimal
    if leaf.leaf.name == "DateTime" and isinstance(coerce, methodcaller):
        return datetime if repr(coerce) == _ISOFORMAT else None
    return None


def _leaf_of(return_type: GraphQLOutputType) -> _Leaf | None:
    inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    if isinstance(inner, GraphQLList):
        inner = inner.of_type
        if isinstance(inner, GraphQLNonNull):
            inner = inner.of_type
    return _Leaf(return_type) if is_leaf_type(inner) else None


class _Kind:
    """A field definition's classification: how to fetch and complete its value."""

    __slots__ = ("attr", "fetch", "func", "kwarg_names", "leaf", "pass_self")

    def __init__(
        self,
        fetch: int,
        *,
        attr: str = "",
        func: Callable[..., Any] | None = None,
        pass_self: bool = False,
        kwarg_names: tuple[str, ...] = (),
        leaf: _Leaf | None = None,
    ) -> None:
        self.fetch = fetch
        self.attr = attr
        self.func = func
        self.pass_self = pass_self
        self.kwarg_names = kwarg_names
        self.leaf = leaf


_SLOW_KIND = _Kind(_SLOW)


def _closure(func: Any) -> dict[str, Any]:
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None) or ()
    if code is None:
        return {}
    try:
        return {
            name: cell.cell_contents for name, cell in zip(code.co_freevars, cells, strict=True)
        }
    except ValueError:  # an empty cell
        return {}


_BASIC_RESOLVER = "GraphQLCoreConverter.from_resolver.<locals>._get_basic_result"
_SYNC_RESOLVER = "GraphQLCoreConverter.from_resolver.<locals>._resolver"


def _plain_field(field: Any) -> TypeGuard[StrawberryField]:
    """A StrawberryField whose result is its resolver's (no get_result override, no field
    extensions)."""
    return (
        isinstance(field, StrawberryField)
        and type(field).get_result is StrawberryField.get_result
        and not field.extensions
    )


def _wrapped_field(resolve: Any) -> StrawberryField | None:
    """The field behind strawberry's resolver wrapper (`_resolver` / `_async_resolver`)
    when nothing stands between the wrapper and the field's function: no extension
    chain, no exception handlers, a plain field and a plain StrawberryResolver. The
    wrapper then does Info, get_arguments() and field.get_result -> base_resolver(...)."""
    cells = _closure(resolve)
    # _get_result_with_extensions (extension_resolver) holds the field and its chain
    chain = _closure(cells.get("_get_result_with_extensions"))
    field = chain.get("field")
    if (
        chain.get("extension_functions") != []
        or cells.get("field_exception_handlers") != ()
        or not _plain_field(field)
    ):
        return None
    base = field.base_resolver
    if (
        base is None
        or type(base).__call__ is not StrawberryResolver.__call__
        or not callable(base.wrapped_func)
    ):
        return None
    return field


def _classify(field_def: GraphQLField) -> _Kind:
    """What strawberry's resolver for this field does, when it is simple enough to inline."""
    resolve = field_def.resolve
    if resolve is None or field_def.args or field_def.subscribe is not None:
        return _SLOW_KIND
    qualname = getattr(resolve, "__qualname__", "")
    leaf = _leaf_of(field_def.type)
    if qualname == _BASIC_RESOLVER:
        # field.get_result(source, info=None, args=[], kwargs={}):
        # field.default_resolver(source, field.python_name)
        field = _closure(resolve).get("field")
        if not _plain_field(field) or field.base_resolver is not None:
            return _SLOW_KIND
        if field.default_resolver is getattr:
            return _Kind(_ATTR, attr=field.python_name, leaf=leaf)
        return _Kind(
            _DEFAULT_RESOLVER, attr=field.python_name, func=field.default_resolver, leaf=leaf
        )
    if qualname != _SYNC_RESOLVER:
        return _SLOW_KIND
    # _resolver with no arguments: get_arguments() passes only the parent object
    wrapped = _wrapped_field(resolve)
    if wrapped is None or wrapped.is_async or wrapped.arguments:
        return _SLOW_KIND
    base = wrapped.base_resolver
    assert base is not None
    func = cast("Callable[..., Any]", base.wrapped_func)  # callable (_wrapped_field)
    loaded = getattr(func, _LOADED_ATTR, None)
    if loaded is not None:
        return _Kind(_LOADER, attr=loaded[1], func=loaded[0], leaf=leaf)
    if base.info_parameter is not None:
        return _SLOW_KIND
    names: dict[str, None] = {}
    if base.parent_parameter is not None:
        names[base.parent_parameter.name] = None
    if base.root_parameter is not None:
        names[base.root_parameter.name] = None
    try:
        parameters = list(inspect.signature(func, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return _SLOW_KIND
    if (
        len(parameters) == 1
        and parameters[0].kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and (
            (base.self_parameter is not None and not names)
            or (base.self_parameter is None and tuple(names) == (parameters[0].name,))
        )
    ):
        # f(source) binds exactly as f(**{name: source}) / f(source) does
        return _Kind(_CALL1, func=func, leaf=leaf)
    return _Kind(
        _CALL,
        func=func,
        pass_self=base.self_parameter is not None,
        kwarg_names=tuple(names),
        leaf=leaf,
    )


_ASYNC_RESOLVER = "GraphQLCoreConverter.from_resolver.<locals>._async_resolver"
# Argument types strawberry hands to a resolver as graphql-core coerced them
# (`convert_argument` answers a leaf's value itself; StrawberryMaybe wraps it in Some)
_PLAIN_ARGUMENT_TYPES: tuple[Any, ...] = (str, int, float, bool, strawberry.ID)


def _plain_argument(argument: Any) -> bool:
    type_ = argument.type
    if isinstance(type_, StrawberryMaybe):
        return False
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    return any(type_ is plain for plain in _PLAIN_ARGUMENT_TYPES)


def _direct_resolver(field_def: GraphQLField, info_class: type) -> Any | None:
    """A resolver calling the field's own function as strawberry's wrapper would, for a
    field whose arguments strawberry passes on unconverted (built-in scalars), with no
    field extensions, no exception handlers and no field subclass: it skips the wrapper's
    argument conversion, extension chain and extra coroutine (what is left is what
    strawberry's `get_arguments` and `StrawberryField.get_result` do). None when the field
    is not such a field, or is inlined anyway (`_classify`)."""
    resolve = field_def.resolve
    qualname = getattr(resolve, "__qualname__", "")
    if qualname not in (_SYNC_RESOLVER, _ASYNC_RESOLVER) or field_def.subscribe is not None:
        return None
    if _classify(field_def) is not _SLOW_KIND:
        return None
    field = _wrapped_field(resolve)
    if field is None or field.is_async != (qualname == _ASYNC_RESOLVER):
        return None
    base = field.base_resolver
    assert base is not None
    func = cast("Callable[..., Any]", base.wrapped_func)  # callable (_wrapped_field)
    names: dict[str, str] = {}  # GraphQL argument name -> the function's parameter
    for name, argument in field_def.args.items():
        definition = argument.extensions.get("strawberry-definition")
        if definition is None or not _plain_argument(definition) or not definition.python_name:
            return None
        names[name] = definition.python_name
    if len(names) != len(field.arguments):
        return None
    pass_self = base.self_parameter is not None
    sources = tuple(
        parameter.name for parameter in (base.parent_parameter, base.root_parameter) if parameter
    )
    info_name = base.info_parameter.name if base.info_parameter is not None else None

    def direct(source: Any, info: Any, **arguments: Any) -> Any:
        kwargs = {names[name]: value for name, value in arguments.items()}
        for name in sources:
            kwargs[name] = source
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=field)
        return func(source, **kwargs) if pass_self else func(**kwargs)

    direct._is_default = False  # type: ignore[attr-defined]  # as strawberry marks its own
    return direct


def install_direct_resolvers(schema: GraphQLSchema, info_class: type) -> int:
    """Replace strawberry's resolver wrapper by `_direct_resolver` wherever it applies; how
    many fields it replaced."""
    replaced = 0
    for type_ in schema.type_map.values():
        if type(type_) is not GraphQLObjectType or type_.name.startswith("__"):
            continue
        for field_def in type_.fields.values():
            direct = _direct_resolver(field_def, info_class)
            if direct is not None:
                field_def.resolve = direct
                replaced += 1
    return replaced


# Field classifications, kept on the schema they belong to (GraphQLField is unhashable:
# keyed by id, the field kept alive by the entry). Not in a module-level WeakKeyDictionary
# keyed by schema: each entry's field references its schema (through strawberry's resolver
# closures), so no schema would ever be collected, and every app built would stay in
# memory (a test suite builds hundreds).
_KINDS_ATTR = "_shopql_field_kinds"


def _kind_of(schema: GraphQLSchema, field_def: GraphQLField) -> _Kind:
    kinds: dict[int, tuple[GraphQLField, _Kind]] | None = schema.__dict__.get(_KINDS_ATTR)
    if kinds is None:
        kinds = {}
        setattr(schema, _KINDS_ATTR, kinds)
    entry = kinds.get(id(field_def))
    if entry is None:
        entry = kinds[id(field_def)] = (field_def, _classify(field_def))
    return entry[1]


class _Step:
    """One response key of a planned selection set."""

    __slots__ = (
        "field_def",
        "fields",
        "hot",
        "item_object_type",
        "item_type",
        "kind",
        "name",
        "object_type",
        "records",
        "return_type",
        "typename",
    )

    def __init__(
        self,
        name: str,
        fields: FieldDetailsList,
        field_def: GraphQLField,
        kind: _Kind,
        typename: str = "",
    ) -> None:
        self.name = name
        self.fields = fields
        self.field_def = field_def
        self.return_type: GraphQLOutputType = field_def.type
        self.kind = kind
        self.typename = typename
        # An object type (nullable or not) whose values need no info (no is_type_of, or a
        # marked one: `records` is then the class its values must be instances of)
        inner = (
            field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) else field_def.type
        )
        self.object_type: GraphQLObjectType | None = inner if _inline_object(inner) else None
        self.records = None if self.object_type is None else _records_of(self.object_type)
        # A list of such objects (nullable or not, items nullable or not)
        self.item_type: GraphQLOutputType | None = None
        self.item_object_type: GraphQLObjectType | None = None
        if type(inner) is GraphQLList:
            item_type = inner.of_type
            item_inner = item_type.of_type if type(item_type) is GraphQLNonNull else item_type
            if _inline_object(item_inner):
                self.item_type = item_type
                self.item_object_type = item_inner
        leaf = kind.leaf
        exact = leaf.exact if leaf is not None and not leaf.list_ else None
        # What the loop reads for every field, in one tuple; `_NO_TYPE` matches no value
        self.hot: tuple[str, int, str, Any, type, Callable[[Any], bool] | None] = (
            name,
            kind.fetch,
            kind.attr,
            kind.func,
            exact[0] if exact is not None else _NO_TYPE,
            exact[1] if exact is not None else None,
        )


def _has_stream(fields: FieldDetailsList) -> bool:
    return any(
        directive.name.value == "stream"
        for details in fields
        for directive in details.node.directives or ()
    )


class RequestExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor (as strawberry configures it) that answers only once nothing
    the operation started still runs.

    When an error reaches a non-null field, graphql-core nulls its parent at once and stops
    waiting for the parent's other fields: they are cancelled (`gather_with_cancel`) or, for
    an error raised synchronously, left to settle in the background. DataLoader batches run
    as tasks of their own and are not cancelled with the fields that asked for them. Either
    kind of leftover holds a pooled connection while it runs, and would otherwise outlive
    the response (and the test, or the server, that disposes of the pool). Everything the
    operation starts is tracked in a `RequestWork`; before the result is returned it gets a
    short grace to finish, then is cancelled (the result is complete: that work is moot),
    within a bounded time (`RequestWork.settle`). A request whose work finished with it (the
    usual case) pays one check.
    """

    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        work, token = start_request_work()
        try:
            result = super().execute_operation(serially)
        except BaseException:
            end_request_work(token)
            work.cancel()  # it raised (an abort): what it started is moot
            raise
        if self.is_awaitable(result):
            return self._settled(result, work, token)
        end_request_work(token)
        self._track_background(work)
        if not work.pending:
            return self._released(result)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # execute_sync: nothing can be running without a loop
            return result
        return self._settled_value(result, work)

    def _released(self, result: Any) -> Any:
        """The result, once nothing of the operation runs any more. graphql-core's
        `async_helpers` hold bound methods of this executor (a reference cycle): cut, so
        the executor and all it holds (plans, loaders' futures and records) are freed at
        once rather than by the garbage collector. Not for incremental delivery (@defer,
        @stream), whose later payloads still run on this executor."""
        if type(result) is ExecutionResult:
            self.async_helpers = _RELEASED_HELPERS
        return result

    def _track_background(self, work: RequestWork) -> None:
        # graphql-core (3.3+) keeps the fields it settles in the background here
        for future in tuple(getattr(self, "background_futures", ())):
            work.track(future)

    async def _settled(self, result: Awaitable[Any], work: RequestWork, token: Any) -> Any:
        cancelled = False
        try:
            answer = await result
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            end_request_work(token)
            self._track_background(work)
            # Cancelled (a deadline, a client gone): nothing waits for the work any more.
            await work.settle(grace=0 if cancelled else None)
        return self._released(answer)

    async def _settled_value(self, result: Any, work: RequestWork) -> Any:
        await work.settle()
        return self._released(result)


class _Loading:
    """One object's loaded fields waiting for their DataLoader futures: what graphql-core's
    task per field would hold. `FastExecutionContext._drive_loaded` completes them; an
    object list first waits for all its items' together (`_await_loaded_list`)."""

    __slots__ = (
        "by_future",
        "completing",
        "dropped",
        "failure",
        "finished",
        "grace",
        "left",
        "on_done",
        "parent_type",
        "path",
        "results",
        "waiting",
        "wake",
        "woken",
    )

    def __init__(
        self,
        parent_type: GraphQLObjectType,
        path: Path | None,
        results: dict[str, Any],
        waiting: list[_Step],
    ) -> None:
        self.parent_type = parent_type
        self.path = path
        self.results = results
        self.waiting = waiting
        by_future: dict[asyncio.Future[Any], list[_Step]] = {}
        for step in waiting:
            by_future.setdefault(results[step.name], []).append(step)
        self.by_future = by_future
        self.finished: list[_Step] = []  # fields whose future is done, not yet completed
        self.left = len(waiting)
        self.completing: list[str] = []  # fields whose completion is awaitable
        self.failure: BaseException | None = None
        self.grace = 0
        self.wake: asyncio.Future[None] | None = None
        self.woken = False  # queued for the list's next round
        self.dropped = False  # gave up (cancelled or failed): callbacks ignore it
        self.on_done: Callable[[asyncio.Future[Any]], None] | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake this object's own coroutine when one of its futures is done."""
        self.wake = loop.create_future()

        def on_done(future: asyncio.Future[Any]) -> None:
            self.finished.extend(self.by_future[future])
            wake = self.wake
            if wake is not None and not wake.done():
                wake.set_result(None)

        self.on_done = on_done
        for future in self.by_future:
            future.add_done_callback(on_done)

    def drop(self) -> None:
        self.dropped = True
        if self.on_done is not None:
            for future in self.by_future:
                future.remove_done_callback(self.on_done)
            self.on_done = None  # it holds this object: a reference cycle

    def done(self) -> None:
        """Every future is done (each ran its callback once and let go of it)."""
        self.on_done = self.wake = None  # on_done holds this object: a reference cycle


# --------------------------------------------------------------------------- compiled


class _Fallback(Exception):
    """A compiled selection met a value it does not complete: the generic path takes it."""


_FALLBACK = _Fallback()
_NOT_YET: Any = object()
# Compiled selections, kept on the schema (like the field kinds): key -> (the grouped
# field set, kept alive so the AST node ids in the key stay unique; the function or None).
# A key is compiled the second time it is seen, so documents that are not reused (no
# document cache) never pay for compilation.
_COMPILED_ATTR = "_shopql_compiled"
# Subfields collected once for every request (FastExecutionContext.collect_subfields):
# (type name, ids of the field nodes) -> (the nodes, kept alive; the collected fields), and
# id(a collected set) -> (the set; its _Compiled entry once found)
_COLLECTED_ATTR = "_shopql_collected"
_MAX_COMPILED = 2000

_CompiledFn = Callable[[Any, Any, Any], dict[str, Any]]
# A compiled selection that fell back in this many requests, and in most of those that
# used it, is not tried again (until the store is cleared): say a field whose values are
# always pending loader futures (batches that are not primed) or awaitables.
_MAX_FALLBACKS = 16


class _Compiled:
    __slots__ = ("fallbacks", "fields", "function", "requests")

    def __init__(self, fields: GroupedFieldSet, function: _CompiledFn | None) -> None:
        self.fields = fields  # kept alive: the AST node ids in its key stay unique
        self.function = function
        self.requests = 0  # that looked it up
        self.fallbacks = 0  # requests in which it fell back

    def fell_back(self) -> None:
        self.fallbacks += 1
        if self.fallbacks >= _MAX_FALLBACKS and self.fallbacks * 2 > self.requests:
            self.function = None


def _drop(value: Any) -> None:
    """Close a coroutine a resolver returned to the compiled path, which does not await
    it: the generic path calls the resolver again."""
    if type(value) is CoroutineType:
        value.close()


def _has_directives(node: Any) -> bool:
    """Whether any selection below `node` (an operation or fragment) carries a directive."""
    selection_set = getattr(node, "selection_set", None)
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if selection.directives or _has_directives(selection):
            return True
    return False


# Whether an operation or a fragment of its document carries a directive, per operation
# node (`remember`).
_DIRECTIVES: dict[int, tuple[Any, bool]] = {}
_MAX_DIRECTIVES = 2000


def _document_has_directives(operation: Any, fragments: Mapping[str, Any]) -> bool:
    return remember(
        _DIRECTIVES,
        operation,
        lambda: _has_directives(operation) or any(_has_directives(f) for f in fragments.values()),
        _MAX_DIRECTIVES,
    )


class _Compiler:
    """Python source for completing an object's selection set in one call, for selections
    whose every field is planned inline (attribute, one-argument resolver, loaded field,
    `__typename`) and completes as an exact leaf, an inline object or a list of them.

    The generated function answers exactly the dict `execute_fields` would, or raises
    (`_Fallback`, or whatever a resolver raised): then the caller runs the generic path,
    which produces the same values, nulls and errors as before. It never records an
    error itself, so anything unusual (null in a non-null field, a pending DataLoader
    future, a value of another type) is left to the generic path."""

    def __init__(self, context: FastExecutionContext) -> None:
        self.context = context
        self.schema = context.schema
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "_FB": _FALLBACK,
            "_FUTURE": _FUTURE,
            "_UNDEF": Undefined,
            "_DROP": _drop,
        }
        self.functions: dict[tuple[GraphQLObjectType, int], str | None] = {}

    def constant(self, value: Any) -> str:
        name = f"g{len(self.names)}"
        self.names[name] = value
        return name

    def compile(self, object_type: GraphQLObjectType, fields: GroupedFieldSet) -> Any:
        top = self.function(object_type, fields)
        if top is None:
            return None
        namespace = dict(self.names)
        exec("\n".join(self.lines), namespace)  # noqa: S102 - source built here from the schema
        return namespace[top]

    def function(self, object_type: GraphQLObjectType, fields: GroupedFieldSet) -> str | None:
        key = (object_type, id(fields))
        if key in self.functions:
            return self.functions[key]
        name = f"c{len(self.functions)}"
        self.functions[key] = None  # a selection that reaches itself is not compiled
        body = [f"def {name}(s, X, C):"]
        entries: list[str] = []
        for index, (response_name, details) in enumerate(fields.items()):
            node = details[0].node
            field_def = self.schema.get_field(object_type, node.name.value)
            if field_def is None or node.arguments:
                return None
            if field_def is TypeNameMetaFieldDef:
                entries.append(f"{response_name!r}: {object_type.name!r}")
                continue
            kind = _kind_of(self.schema, field_def)
            var = f"v{index}"
            fetched = self.fetch(kind, var)
            completed = self.complete(var, field_def.type, kind, details)
            if fetched is None or completed is None:
                return None
            body += fetched + completed
            entries.append(f"{response_name!r}: {var}")
        body.append("    return {" + ", ".join(entries) + "}")
        self.lines += body
        self.functions[key] = name
        return name

    def fetch(self, kind: _Kind, var: str) -> list[str] | None:
        attr = kind.attr
        if kind.fetch == _ATTR and attr.isidentifier() and not iskeyword(attr):
            return [f"    {var} = s.{attr}"]
        if kind.fetch == _CALL1:
            return [f"    {var} = {self.constant(kind.func)}(s)"]
        if kind.fetch == _LOADER and attr.isidentifier() and not iskeyword(attr):
            loader = self.constant(kind.func)
            return [
                f"    k = s.{attr}",
                "    if k is None:",
                f"        {var} = None",
                "    else:",
                f"        f = {loader}(C).load(k)",
                "        if type(f) is not _FUTURE or not f.done() or f.cancelled()"
                " or f.exception() is not None:",
                "            raise _FB",
                f"        {var} = f.result()",
            ]
        return None

    def complete(
        self, var: str, return_type: GraphQLOutputType, kind: _Kind, details: FieldDetailsList
    ) -> list[str] | None:
        non_null = isinstance(return_type, GraphQLNonNull)
        inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
        leaf = kind.leaf
        if leaf is not None:
            inline = [
                f"        d, w = X._complete_leaf_inline({self.constant(leaf)}, {var})",
                "        if not d:",
                f"            _DROP({var})",
                "            raise _FB",
                f"        {var} = w",
            ]
            exact = leaf.exact if not leaf.list_ else None
            if exact is None and not leaf.list_:
                direct = self.direct_leaf(var, leaf)
                if direct is not None:
                    return [*direct, "    else:", *inline]
            if exact is None:  # always through the helper
                return [line[4:] for line in inline]
            test = f"type({var}) is not {self.constant(exact[0])}"
            if exact[1] is not None:
                test += f" or not {self.constant(exact[1])}({var})"
            return [f"    if {test}:", *inline]
        if _inline_object(inner):
            child = self.child(inner, details)
            if child is None:
                return None
            records = _records_of(inner)
            lines = [f"    if {var} is None:", "        raise _FB" if non_null else "        pass"]
            if records is not None:
                lines += [
                    f"    elif isinstance({var}, {self.constant(records)}):",
                    f"        {var} = {child}({var}, X, C)",
                    "    else:",
                    "        raise _FB",
                ]
            else:
                lines += [
                    f"    elif {var} is _UNDEF or isinstance({var}, Exception)"
                    f" or X.is_awaitable({var}):",
                    f"        _DROP({var})",
                    "        raise _FB",
                    "    else:",
                    f"        {var} = {child}({var}, X, C)",
                ]
            return lines
        if type(inner) is GraphQLList:
            item_type = inner.of_type
            item_non_null = isinstance(item_type, GraphQLNonNull)
            item_inner = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
            if not _inline_object(item_inner):
                return None
            child = self.child(item_inner, details)
            if child is None:
                return None
            records = _records_of(item_inner)
            present = (
                f"isinstance(i, {self.constant(records)})"
                if records is not None
                else "i is not None and i is not _UNDEF and not isinstance(i, Exception)"
                " and not X.is_awaitable(i)"
            )
            lines = [
                f"    if type({var}) is list:",
                "        o = []",
                f"        for i in {var}:",
                f"            if {present}:",
                f"                o.append({child}(i, X, C))",
            ]
            if not item_non_null:
                lines += ["            elif i is None:", "                o.append(None)"]
            lines += ["            else:", "                raise _FB", f"        {var} = o"]
            lines += [f"    elif {var} is not None:", f"        _DROP({var})", "        raise _FB"]
            if non_null:
                lines += ["    else:", "        raise _FB"]
            return lines
        return None

    def direct_leaf(self, var: str, leaf: _Leaf) -> list[str] | None:
        """The lines that complete a strawberry enum member or a value of a custom scalar
        whose serializer cannot fail on its exact Python type (Decimal, DateTime) without
        the helper; `else:` the helper follows. An enum member the executor would not
        name (None in `enum_names`) goes to the helper."""
        if leaf.enum_type is not None:
            enum_type, names = self.constant(leaf.enum_type), self.constant(leaf.enum_names)
            return [
                f"    n = {names}.get({var}) if type({var}) is {enum_type} else None",
                "    if n is not None:",
                f"        {var} = n",
            ]
        python_type = _direct_scalar(leaf)
        if python_type is None:
            return None
        return [
            f"    if type({var}) is {self.constant(python_type)}:",
            f"        {var} = {self.constant(leaf.coerce)}({var})",
        ]

    def child(self, object_type: GraphQLObjectType, details: FieldDetailsList) -> str | None:
        fields, new_defer_usages, *_ = self.context.collect_subfields(object_type, details)
        if new_defer_usages:
            return None
        return self.function(object_type, fields)


class FastExecutionContext(RequestExecutionContext):
    """graphql-core's executor (as strawberry configures it) with trivial fields inlined,
    answering once nothing the operation started still runs (`RequestExecutionContext`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        self._fast = manager is None or not manager.middlewares
        if self._fast:
            self.is_awaitable = _by_type(self.is_awaitable)
        # An abort signal must interrupt every awaited value (graphql-core's
        # with_abort_signal): loader futures then take graphql-core's path one by one.
        self._wait_loaders = getattr(self, "abort_signal", None) is None
        # @stream can only apply to a list when the schema has the directive (a document
        # using it otherwise fails validation)
        self._may_stream = self.schema.get_directive("stream") is not None
        # (parent type, id of the grouped field set) -> (the set, kept alive; its plan)
        self._plans: dict[tuple[GraphQLObjectType, int], tuple[GroupedFieldSet, list[_Step]]] = {}
        # Set by _complete_object_list for the next execute_fields call (one list item):
        # loaded fields then come back as a _Loading for the list to wait for together
        self._item_loading = False
        # (parent type, id of the grouped field set) -> its compiled function, or None
        # (not compilable, or it fell back once in this request)
        self._compiled: dict[tuple[GraphQLObjectType, int], _Compiled | None] = {}
        # Compiled selections need a document without directives (@skip/@include may
        # depend on variables, @defer/@stream change completion)
        self._may_compile = (
            self._fast
            and self._wait_loaders
            and not _document_has_directives(self.operation, self.fragments)
        )

    def collect_subfields(
        self, return_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> CollectedFields:
        """graphql-core's per-request memo, then, for a document without directives, the
        schema's store: there the subfields depend on the field nodes and the type alone
        (no @skip/@include reads a variable, no @defer), and the cached document hands out
        the same nodes for every request, so they are collected once per document rather
        than once per request. (graphql-core's own memo keys on the identity of the
        field list, which each request builds anew.)"""
        memo = self._relevant_sub_fields
        key = (return_type, id(field_details_list))
        cached = memo.get(key)
        if cached is not None:
            return cached[1]
        if not self._may_compile or any(
            details.defer_usage is not None or details.fragment_variable_values is not None
            for details in field_details_list
        ):
            return super().collect_subfields(return_type, field_details_list)
        store = schema_store(self.schema, _COLLECTED_ATTR)
        nodes = tuple(details.node for details in field_details_list)
        shared_key = (return_type.name, tuple(map(id, nodes)))
        shared = store.get(shared_key)
        if shared is not None and all(map(operator.is_, shared[0], nodes)):
            collected = shared[1]
        else:
            collected = super().collect_subfields(return_type, field_details_list)
            if not collected.new_defer_usages and all(
                details.fragment_variable_values is None
                for group in collected.grouped_field_set.values()
                for details in group
            ):
                if len(store) >= 2 * _MAX_COMPILED:
                    store.clear()
                store[shared_key] = (nodes, collected)
                # its compiled function, found by the set's identity (`_find_compiled`)
                grouped = collected.grouped_field_set
                store[id(grouped)] = (grouped, None)
        memo[key] = (field_details_list, collected)
        return collected

    def _find_compiled(
        self, parent_type: GraphQLObjectType, fields: GroupedFieldSet
    ) -> _Compiled | None:
        """The compiled function for this selection (see `_Compiler`), from the schema's
        store: keyed by the AST nodes of the selection (the document cache hands out the
        same parsed document for the same query text), built the second time it is asked
        for."""
        shared = schema_store(self.schema, _COLLECTED_ATTR)
        known = shared.get(id(fields))
        if known is not None and known[0] is fields and known[1] is not None:
            entry = known[1]  # a set collected once for every request (collect_subfields)
        else:
            store: dict[Any, _Compiled] = schema_store(self.schema, _COMPILED_ATTR)
            key = (
                parent_type.name,
                tuple(tuple(id(d.node) for d in details) for details in fields.values()),
            )
            entry = store.get(key)
            if entry is None:
                if len(store) >= _MAX_COMPILED:
                    store.clear()
                store[key] = _Compiled(fields, _NOT_YET)  # seen once
                return None
            if known is not None and known[0] is fields:
                shared[id(fields)] = (fields, entry)
        if entry.function is _NOT_YET:
            entry.function = _Compiler(self).compile(parent_type, fields)
        entry.requests += 1
        return entry if entry.function is not None else None

    def _plan(self, parent_type: GraphQLObjectType, fields: GroupedFieldSet) -> list[_Step]:
        schema = self.schema
        steps: list[_Step] = []
        for name, details in fields.items():
            field_def = schema.get_field(parent_type, details[0].node.name.value)
            if field_def is None:
                continue  # execute_field answers Undefined: the key is left out
            if field_def is TypeNameMetaFieldDef:
                kind = _Kind(_TYPENAME)
            elif details[0].node.arguments:
                kind = _SLOW_KIND
            else:
                kind = _kind_of(schema, field_def)
                if kind.leaf is not None and kind.leaf.list_ and _has_stream(details):
                    kind = _SLOW_KIND
            steps.append(_Step(name, details, field_def, kind, parent_type.name))
        return steps

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        """graphql-core's execute_fields, with planned fields fetched and completed inline."""
        if not self._fast:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        item_loading = self._item_loading
        if item_loading:
            self._item_loading = False  # for this call only, not the nested ones
        key = (parent_type, id(grouped_field_set))
        if self._may_compile and position_context is None:
            compiled = self._compiled.get(key, _NOT_YET)
            if compiled is _NOT_YET:
                compiled = self._compiled[key] = self._find_compiled(parent_type, grouped_field_set)
            function = None if compiled is None else compiled.function
            if function is not None:
                assert compiled is not None
                try:
                    return function(source_value, self, self.context_value)
                except Exception:
                    # The generic path below answers it (errors included); the rest of
                    # this request does not try again (a pending loader stays pending)
                    self._compiled[key] = None
                    compiled.fell_back()
        planned = self._plans.get(key)
        if planned is None:
            planned = self._plans[key] = (
                grouped_field_set,
                self._plan(parent_type, grouped_field_set),
            )
        steps = planned[1]

        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        append_awaitable = awaitable_fields.append
        # Loaded fields whose DataLoader future is pending: completed together once all
        # are done, without a coroutine and a task per field
        waiting: list[_Step] = []
        try:
            for step in steps:
                response_name, fetch, attr, func, exact_type, check = step.hot
                if fetch == _ATTR:
                    try:
                        value = getattr(source_value, attr)
                    except Exception as raw_error:
                        self._fetch_failed(raw_error, step, path, parent_type)
                        results[response_name] = None
                        continue
                elif fetch == _CALL1:
                    try:
                        value = func(source_value)
                    except Exception as raw_error:
                        self._fetch_failed(raw_error, step, path, parent_type)
                        results[response_name] = None
                        continue
                elif fetch == _LOADER:
                    try:
                        key = getattr(source_value, attr)
                        value = None if key is None else func(self.context_value).load(key)
                    except Exception as raw_error:
                        self._fetch_failed(raw_error, step, path, parent_type)
                        results[response_name] = None
                        continue
                    if type(value) is _FUTURE and self._wait_loaders:
                        if not value.done():
                            results[response_name] = value
                            waiting.append(step)
                            continue
                        if not value.cancelled() and value.exception() is None:
                            value = value.result()  # loaded earlier in this request
                elif fetch == _SLOW:
                    result = self.execute_field(
                        parent_type,
                        source_value,
                        step.fields,
                        Path(path, response_name, parent_type.name),
                        position_context,
                    )
                    if result is not Undefined:
                        results[response_name] = result
                        if is_awaitable(result):
                            append_awaitable(response_name)
                    continue
                elif fetch == _TYPENAME:
                    results[response_name] = step.typename
                    continue
                else:
                    try:
                        value = self._fetch(step.kind, source_value)
                    except Exception as raw_error:
                        self._fetch_failed(raw_error, step, path, parent_type)
                        results[response_name] = None
                        continue

                # A leaf value its scalar's coerce_output_value returns unchanged
                if type(value) is exact_type and (check is None or check(value)):
                    results[response_name] = value
                    continue
                result = self._complete_fetched(step, parent_type, path, value, position_context)
                results[response_name] = result
                if type(result) not in _PLAIN and is_awaitable(result):
                    append_awaitable(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise

        if waiting:
            if item_loading and not awaitable_fields:
                return _Loading(parent_type, path, results, waiting)  # type: ignore[return-value]
            return self._await_loaded(
                parent_type, path, results, awaitable_fields, waiting, position_context
            )
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                field = awaitable_fields[0]
                results[field] = await results[field]
            else:
                awaited_results = await gather_with_cancel(
                    *(results[field] for field in awaitable_fields)
                )
                results.update(zip(awaitable_fields, awaited_results, strict=True))
            return results

        return get_results()

    def _complete_fetched(
        self,
        step: _Step,
        parent_type: GraphQLObjectType,
        path: Path | None,
        value: Any,
        position_context: Any,
    ) -> AwaitableOrValue[Any]:
        """Complete a fetched value that is not an exact leaf value: a leaf inline when
        that cannot fail, a present object straight to its subfields, else graphql-core."""
        leaf = step.kind.leaf
        if leaf is not None:
            done, completed = self._complete_leaf_inline(leaf, value)
            if done:
                return completed
        elif step.object_type is not None:
            records = step.records
            if (
                (isinstance(value, records) if records is not None else value is not None)
                and value is not Undefined
                and not self.is_awaitable(value)
                and not isinstance(value, Exception)
            ):
                return self._complete_object(
                    step, Path(path, step.name, parent_type.name), value, position_context
                )
        elif step.item_object_type is not None and type(value) is list and position_context is None:
            return self._complete_list(step, parent_type, path, value)
        return self._complete_resolved(
            step, parent_type, Path(path, step.name, parent_type.name), value, position_context
        )

    async def _await_loaded(
        self,
        parent_type: GraphQLObjectType,
        path: Path | None,
        results: dict[str, Any],
        awaitable_fields: list[str],
        waiting: list[_Step],
        position_context: Any,
    ) -> dict[str, Any]:
        """The rest of execute_fields when loaded fields wait for DataLoader futures.

        graphql-core would await each future in a task of its own and complete the value
        when that task wakes. Here one wait covers them all: each future's completion
        queues its fields (in the order the futures finish, as the tasks would wake), and
        this coroutine completes whatever has finished each time it wakes. A non-null
        field's error stops the wait (graphql-core cancels the other tasks), after the
        fields that had finished with it are completed (their tasks would have run
        first). Cancelled, it leaves the futures alone: other fields may share them.
        Other awaitable fields are started first and run meanwhile.
        """
        running = None
        if awaitable_fields:  # started now, as graphql-core would (they may load too)
            running = asyncio.ensure_future(
                gather_with_cancel(*(results[field] for field in awaitable_fields))
            )
        state = _Loading(parent_type, path, results, waiting)
        state.watch(asyncio.get_running_loop())
        return await self._drive_loaded(state, running, awaitable_fields)

    def _process_loaded(self, state: _Loading) -> None:
        """Complete the fields whose futures finished since the last time (graphql-core's
        tasks for them waking); the first error that escapes a field (a non-null one, or
        a cancellation) is kept and the object gets two loop iterations of grace:
        graphql-core's tasks that wake before its gather has seen the error still
        complete their fields."""
        ready = state.finished[:]
        state.finished.clear()
        state.left -= len(ready)
        results = state.results
        for step in ready:
            try:
                result = self._complete_loaded(step, state.parent_type, state.path, results)
            except BaseException as error:
                if state.failure is None:
                    state.failure, state.grace = error, 2
                continue
            results[step.name] = result
            if self.is_awaitable(result):
                state.completing.append(step.name)

    async def _drive_loaded(
        self,
        state: _Loading,
        running: asyncio.Future[list[Any]] | None = None,
        awaitable_fields: list[str] | None = None,
    ) -> dict[str, Any]:
        """Wait for `state`'s futures (its wake is set as they finish), complete their
        fields, then await what completing them started (and the `running` fields)."""
        loop = asyncio.get_running_loop()
        results = state.results
        try:
            while state.left:
                if state.failure is None:
                    assert state.wake is not None
                    await state.wake
                    state.wake = loop.create_future()
                elif state.grace:
                    await asyncio.sleep(0)
                    state.grace -= 1
                else:
                    break
                self._process_loaded(state)
            if state.failure is not None:
                raise state.failure
            state.done()
        except BaseException:
            state.drop()
            if running is not None:
                running.cancel()
                self.settle_in_background([running])
            if state.completing:
                self.settle_in_background([results[name] for name in state.completing])
            raise
        completing = state.completing
        if completing:
            if len(completing) == 1 and running is None:
                name = completing[0]
                results[name] = await results[name]
            else:
                done = asyncio.ensure_future(
                    gather_with_cancel(*(results[name] for name in completing))
                )
                if running is None:
                    results.update(zip(completing, await done, strict=True))
                else:
                    await gather_with_cancel(running, done)
                    results.update(zip(completing, done.result(), strict=True))
        if running is not None:
            assert awaitable_fields is not None
            results.update(zip(awaitable_fields, await running, strict=True))
        return results

    async def _await_loaded_list(
        self,
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        completed_results: list[Any],
        loading: list[tuple[int, Path, _Loading]],
    ) -> list[Any]:
        """The items of an object list whose only pending fields are loaded ones, waited
        for in this one coroutine instead of a task per item (_await_loaded's).

        It does what those tasks would: every future's completion queues its fields on
        its items (in the order the tasks would wake), and each round completes the
        items woken, in that order. Items that finish plainly are done. When one fails
        (a non-null field's error) or its completion starts more work (nested awaitables),
        from that round on every unfinished item goes on as a coroutine of its own
        (`_drive_loaded`, its first step run inline as the task would have run it), and
        the list awaits them as graphql-core's gather would.
        """
        loop = asyncio.get_running_loop()
        by_future: dict[asyncio.Future[Any], list[tuple[_Loading, list[_Step]]]] = {}
        for _index, _path, state in loading:
            for future, steps in state.by_future.items():
                by_future.setdefault(future, []).append((state, steps))
        woken: list[_Loading] = []
        wake: list[asyncio.Future[None]] = [loop.create_future()]
        alone = [False]  # items go on as coroutines of their own

        def on_done(future: asyncio.Future[Any]) -> None:
            for state, steps in by_future[future]:
                if state.dropped:
                    continue
                state.finished.extend(steps)
                if alone[0]:
                    item_wake = state.wake
                    if item_wake is not None and not item_wake.done():
                        item_wake.set_result(None)
                elif not state.woken:
                    state.woken = True
                    woken.append(state)
            if not wake[0].done():
                wake[0].set_result(None)

        if any(future.done() for future in by_future):
            # graphql-core's tasks would first run (and see these) one iteration later
            await asyncio.sleep(0)
        for future in by_future:
            future.add_done_callback(on_done)
        index_of = {id(state): (index, path) for index, path, state in loading}
        left = len(loading)
        pending: list[int] = []
        try:
            while left:
                await wake[0]
                wake[0] = loop.create_future()
                ready = woken[:]
                woken.clear()
                for state in ready:
                    state.woken = False
                    self._process_loaded(state)
                    if state.failure is None and not state.completing:
                        if not state.left:
                            index, _path = index_of[id(state)]
                            completed_results[index] = state.results
                            left -= 1
                        continue
                    alone[0] = True  # (nothing is woken during a round: no callback runs)
                    self._go_alone(
                        state, index_of, item_type, field_details_list, completed_results, pending
                    )
                    left -= 1
                if alone[0]:
                    break
            if alone[0]:
                for _index, _path, state in loading:
                    if state.left and not state.dropped and state.wake is None:
                        self._go_alone(
                            state,
                            index_of,
                            item_type,
                            field_details_list,
                            completed_results,
                            pending,
                        )
                awaited = await gather_with_cancel(*(completed_results[at] for at in pending))
                for at, value in zip(pending, awaited, strict=True):
                    completed_results[at] = value
        finally:
            for future in by_future:
                future.remove_done_callback(on_done)
        return completed_results

    def _go_alone(
        self,
        state: _Loading,
        index_of: dict[int, tuple[int, Path]],
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        completed_results: list[Any],
        pending: list[int],
    ) -> None:
        """Continue one list item as the coroutine graphql-core's task would run: its first
        step now (inline), the rest in a task; its result, or the awaitable, in place."""
        index, path = index_of[id(state)]
        state.wake = asyncio.get_running_loop().create_future()
        finished, value = run_inline(
            self._await_completed(self._drive_loaded(state), item_type, field_details_list, path)
        )
        completed_results[index] = value
        if not finished:
            pending.append(index)

    def _complete_loaded(
        self,
        step: _Step,
        parent_type: GraphQLObjectType,
        path: Path | None,
        results: dict[str, Any],
    ) -> AwaitableOrValue[Any]:
        """complete_awaitable_value for a finished DataLoader future (raises what it would)."""
        try:
            value = results[step.name].result()  # a cancellation propagates, as awaited
        except Exception as raw_error:
            self._fetch_failed(raw_error, step, path, parent_type)
            return None
        return self._complete_fetched(step, parent_type, path, value, None)

    @staticmethod
    def _fetch(kind: _Kind, source: Any) -> Any:
        """The value strawberry's resolver wrapper would produce, for the other shapes."""
        func = kind.func
        assert func is not None
        if kind.fetch == _DEFAULT_RESOLVER:
            return func(source, kind.attr)
        kwargs = dict.fromkeys(kind.kwarg_names, source)
        return func(source, **kwargs) if kind.pass_self else func(**kwargs)

    def _fetch_failed(
        self,
        raw_error: Exception,
        step: _Step,
        path: Path | None,
        parent_type: GraphQLObjectType,
    ) -> None:
        """The resolver raised: graphql-core's handling (raises for a non-null field)."""
        self.handle_field_error(
            raw_error, step.return_type, step.fields, Path(path, step.name, parent_type.name)
        )

    def _complete_leaf_inline(self, leaf: _Leaf, value: Any) -> tuple[bool, Any]:
        """(True, completed) when the value completes without graphql-core's machinery
        and cannot fail; (False, None) when graphql-core must complete it."""
        exact = leaf.exact
        if exact is not None:
            exact_type, check = exact
            if not leaf.list_:
                if type(value) is exact_type and (check is None or check(value)):
                    return True, value
            elif type(value) is list:
                for item in value:
                    if type(item) is not exact_type or (check is not None and not check(item)):
                        if item is None and not leaf.item_non_null:
                            continue
                        return False, None
                return True, list(value)
        if value is None or value is Undefined:
            return (False, None) if leaf.non_null else (True, None)
        if type(value) is leaf.enum_type:
            name = leaf.enum_names.get(value)
            if name is not None:
                return True, name
        if (
            leaf.list_
            or isinstance(value, Exception)
            or (type(value) not in _PLAIN and self.is_awaitable(value))
        ):
            return False, None
        # graphql-core's complete_leaf_value
        try:
            coerced = leaf.coerce(value)
        except Exception:
            return False, None  # graphql-core raises it again, located
        if coerced is None or coerced is Undefined:
            return False, None  # graphql-core's TypeError, located
        return True, coerced

    def _complete_list(
        self, step: _Step, parent_type: GraphQLObjectType, path: Path | None, value: list[Any]
    ) -> AwaitableOrValue[Any]:
        """_complete_resolved for a list of objects that need no info: complete_value's
        list path (`complete_value` below) without building the field's ResolveInfo, which
        is built only if an item needs graphql-core's own path."""
        field_path = Path(path, step.name, parent_type.name)
        field_details_list = step.fields
        if self._may_stream and self.get_stream_usage(field_details_list, field_path) is not None:
            return self._complete_resolved(step, parent_type, field_path, value, None)
        item_type, object_type = step.item_type, step.item_object_type
        assert item_type is not None and object_type is not None

        def info() -> GraphQLResolveInfo:
            return self.build_resolve_info(
                step.field_def, [d.node for d in field_details_list], parent_type, field_path
            )

        try:
            completed = self._complete_object_list(
                item_type, object_type, field_details_list, info, field_path, value, None
            )
            if type(completed) is not list and self.is_awaitable(completed):
                return self._await_completed(
                    completed, step.return_type, field_details_list, field_path
                )
        except Exception as raw_error:
            self.handle_field_error(raw_error, step.return_type, field_details_list, field_path)
            return None
        return completed

    def _complete_object(
        self, step: _Step, path: Path, result: Any, position_context: Any
    ) -> AwaitableOrValue[Any]:
        """complete_value for a present, synchronous value of an object type without
        is_type_of or whose marked is_type_of holds for it: complete_object_value reduced to
        collect_and_execute_subfields (the result is a dict or an awaitable, never null,
        so the non-null check is moot)."""
        object_type = step.object_type
        assert object_type is not None
        try:
            # collect_and_execute_subfields; without @defer, straight to execute_fields
            # (what execute_collected_subfields does then)
            grouped_field_set, new_defer_usages, _ = self.collect_subfields(
                object_type, step.fields
            )
            if position_context is None and not new_defer_usages:
                completed = self.execute_fields(object_type, result, path, grouped_field_set, None)
            else:
                completed = self.execute_collected_subfields(
                    object_type,
                    result,
                    path,
                    grouped_field_set,
                    new_defer_usages,
                    position_context,
                )
            if type(completed) is not dict and self.is_awaitable(completed):
                return self._await_completed(completed, step.return_type, step.fields, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, step.return_type, step.fields, path)
            return None
        return completed

    async def _await_completed(
        self,
        completed: Awaitable[Any],
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None

    def complete_value(
        self,
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> AwaitableOrValue[Any]:
        """graphql-core's complete_value, with a shortcut for a present value of an object
        type (list items, awaited values): straight to complete_object_value, whose
        result (a dict or an awaitable) is never null."""
        if self._fast and result is not None and result is not Undefined:
            object_type = (
                return_type.of_type if type(return_type) is GraphQLNonNull else return_type
            )
            if type(object_type) is GraphQLObjectType and not isinstance(result, Exception):
                return self.complete_object_value(
                    object_type, field_details_list, info, path, result, position_context
                )
            if type(object_type) is GraphQLList and type(result) is list:
                item_type = object_type.of_type
                inner = item_type.of_type if type(item_type) is GraphQLNonNull else item_type
                if type(inner) is GraphQLObjectType and (
                    not self._may_stream or self.get_stream_usage(field_details_list, path) is None
                ):
                    return self._complete_object_list(
                        item_type, inner, field_details_list, info, path, result, position_context
                    )
        return super().complete_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _complete_object_list(
        self,
        item_type: GraphQLOutputType,
        object_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo | Callable[[], GraphQLResolveInfo],
        path: Path,
        items: list[Any],
        position_context: Any,
    ) -> AwaitableOrValue[list[Any]]:
        """graphql-core's complete_iterable_value for a list of objects, with each present
        item completed straight through is_type_of and its subfields (what
        complete_list_item_value -> complete_value -> complete_object_value do for it);
        other items (null, awaitable, exception values, a non-boolean is_type_of) take
        graphql-core's own per-item path. `info` may be a function building the field's
        info: called only when needed (an unmarked is_type_of, an item graphql-core
        completes)."""
        is_awaitable = self.is_awaitable
        is_type_of = object_type.is_type_of
        records = _records_of(object_type)
        make_info: Callable[[], GraphQLResolveInfo] | None = None
        field_info: GraphQLResolveInfo | None
        if callable(info):
            make_info, field_info = info, None
            if records is None and is_type_of is not None:
                field_info = make_info()
        else:
            field_info = info
        completed_results: list[Any] = []
        append = completed_results.append
        awaitable_indices: list[int] = []
        # Items whose only pending fields are loaded ones (execute_fields called directly,
        # as execute_collected_subfields does without @defer)
        loading: list[tuple[int, Path, _Loading]] | None = None
        direct: GroupedFieldSet | None = None
        if position_context is None:
            grouped_field_set, new_defer_usages, _ = self.collect_subfields(
                object_type, field_details_list
            )
            if not new_defer_usages:
                direct = grouped_field_set
        try:
            for index, item in enumerate(items):
                item_path = path.add_key(index, None)
                if (
                    item is None
                    or is_awaitable(item)
                    or isinstance(item, Exception)
                    or (
                        not isinstance(item, records)
                        if records is not None
                        else is_type_of is not None
                        and is_type_of(item, cast(GraphQLResolveInfo, field_info)) is not True
                    )
                ):
                    if field_info is None:
                        assert make_info is not None
                        field_info = make_info()
                    if is_awaitable(item):
                        append(
                            self.complete_awaitable_list_item_value(
                                item,
                                item_type,
                                field_details_list,
                                field_info,
                                item_path,
                                position_context,
                            )
                        )
                        awaitable_indices.append(index)
                    elif self.complete_list_item_value(
                        item,
                        completed_results,
                        item_type,
                        field_details_list,
                        field_info,
                        item_path,
                        position_context,
                    ):
                        awaitable_indices.append(index)
                    continue
                try:
                    if direct is not None:
                        self._item_loading = True
                        completed = self.execute_fields(object_type, item, item_path, direct, None)
                        self._item_loading = False
                    else:
                        completed = self.collect_and_execute_subfields(
                            object_type, field_details_list, item_path, item, position_context
                        )
                    if type(completed) is _Loading:
                        if loading is None:
                            loading = []
                        loading.append((index, item_path, completed))
                        append(None)
                    elif is_awaitable(completed):
                        append(
                            self._await_completed(
                                completed, item_type, field_details_list, item_path
                            )
                        )
                        awaitable_indices.append(index)
                    else:
                        append(completed)
                except Exception as raw_error:
                    self.handle_field_error(raw_error, item_type, field_details_list, item_path)
                    append(None)
        except Exception:
            self._item_loading = False
            pending = [completed_results[i] for i in awaitable_indices]
            if pending:
                self.settle_in_background(pending)
            raise

        if loading is not None:
            if len(loading) > 1 and not awaitable_indices:
                return self._await_loaded_list(
                    item_type, field_details_list, completed_results, loading
                )
            for index, item_path, state in loading:  # each item as a coroutine of its own
                completed_results[index] = self._await_completed(
                    self._await_loaded(
                        state.parent_type, state.path, state.results, [], state.waiting, None
                    ),
                    item_type,
                    field_details_list,
                    item_path,
                )
                awaitable_indices.append(index)
            awaitable_indices.sort()
        if not awaitable_indices:
            return completed_results

        async def get_completed_results() -> list[Any]:
            if len(awaitable_indices) == 1:
                at = awaitable_indices[0]
                completed_results[at] = await completed_results[at]
            else:
                awaited = await gather_with_cancel(
                    *(completed_results[at] for at in awaitable_indices)
                )
                for at, value in zip(awaitable_indices, awaited, strict=True):
                    completed_results[at] = value
            return completed_results

        return get_completed_results()

    def _complete_resolved(
        self,
        step: _Step,
        parent_type: GraphQLObjectType,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """The part of graphql-core's execute_field after the resolver returned `result`."""
        field_def = step.field_def
        field_details_list = step.fields
        return_type = step.return_type
        info = self.build_resolve_info(
            field_def, [details.node for details in field_details_list], parent_type, path
        )
        try:
            if self.is_awaitable(result):
                return self.complete_awaitable_value(
                    return_type, field_details_list, info, path, result, position_context
                )
            completed = self.complete_value(
                return_type, field_details_list, info, path, result, position_context
            )
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, field_details_list, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        return completed
