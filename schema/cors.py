"""CORS for credentialed browser clients: an allowed origin gets
`Access-Control-Allow-Origin: <origin>` and `Access-Control-Allow-Credentials: true`, on
preflights and on actual requests; any other origin gets neither (Starlette's own
middleware sends `Allow-Credentials` to every origin)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schema.observability import request_id_for
from schema.transport import error_body

ALLOW_METHODS = ("GET", "POST", "OPTIONS")
ALLOW_HEADERS = ("authorization", "content-type", "x-request-id")
EXPOSE_HEADERS = ("x-request-id",)


class CredentialedCORSMiddleware(CORSMiddleware):
    """Starlette's CORS with explicit origins and credentials, strict for the others."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str], max_age: int = 600) -> None:
        super().__init__(
            app,
            allow_origins=list(origins),
            allow_credentials=True,
            allow_methods=list(ALLOW_METHODS),
            allow_headers=list(ALLOW_HEADERS),
            expose_headers=list(EXPOSE_HEADERS),
            max_age=max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                response.headers["x-request-id"] = request_id_for(scope)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # Refused: say why, as a GraphQL error body, with no CORS grant at all.
        return Response(
            orjson.dumps(error_body(bytes(response.body).decode(), "BAD_REQUEST")),
            status_code=400,
            media_type="application/json",
            headers={"vary": self.preflight_headers["Vary"]},
        )

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if origin is None or self.is_allowed_origin(origin):
            await super().send(message, send, request_headers)
            return
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers.append("vary", "Origin")  # the answer differs by origin
        await send(message)
