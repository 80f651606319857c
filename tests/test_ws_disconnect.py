"""A subscription whose client disconnects while a result is being sent ends quietly: no
error logged (a traceback in the server log for what clients do every day hides real
failures), the operation forgotten."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from strawberry.http.exceptions import WebSocketDisconnected

from schema import ws


async def _events() -> AsyncIterator[Any]:
    yield {"data": {"orderCreated": {"id": "T3JkZXI6MQ=="}}}


async def _run(failure: Exception, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    async def context(*_args: Any) -> object:
        return object()

    async def stream(*_args: Any, **_kwargs: Any) -> AsyncIterator[Any]:
        return _events()

    async def send_result_stream(_operation: Any, source: AsyncIterator[Any]) -> None:
        async for _ in source:
            raise failure

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    monkeypatch.setattr(ws, "operation_context", context)
    operation = SimpleNamespace(
        id="op-1", query="subscription { orderCreated { id } }", variables=None,
        operation_name=None, send_operation_message=send,
    )  # fmt: skip
    errors: list[BaseException] = []

    async def handle_task_exception(error: Exception) -> None:
        errors.append(error)
        logging.getLogger("shopql.ws").error("WebSocket operation failed", exc_info=error)

    handler = SimpleNamespace(
        connection=object(), context=object(), root_value=None,
        schema=SimpleNamespace(stream=stream), _send_result_stream=send_result_stream,
        operations={"op-1": operation}, handle_task_exception=handle_task_exception,
    )  # fmt: skip
    try:
        await ws.ShopTransportWSHandler.run_operation(handler, operation)  # type: ignore[arg-type]
    except Exception as error:  # what the task's done callback would see
        errors.append(error)
    return SimpleNamespace(errors=errors, operations=handler.operations, sent=sent)


async def test_a_client_gone_mid_result_ends_the_operation_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        outcome = await _run(WebSocketDisconnected(), monkeypatch)
    assert outcome.errors == [] and outcome.operations == {} and outcome.sent == []
    assert not caplog.records


async def test_a_real_failure_is_still_logged_and_completed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        outcome = await _run(RuntimeError("boom"), monkeypatch)
    assert [type(e) for e in outcome.errors] == [RuntimeError, RuntimeError]
    assert outcome.operations == {}
    assert outcome.sent == [{"id": "op-1", "type": "complete"}]
    assert any(r.levelno == logging.ERROR for r in caplog.records)
