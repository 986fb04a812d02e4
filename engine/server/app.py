"""The HTTP side of `skv serve`: a Starlette app with the OpenAI routes over one EngineBridge.

Every request first passes the guard: its Host must be one of the server's own names or addresses (a page served
from another name that resolves here — DNS rebinding — is refused), and with an API key it must carry
`Authorization: Bearer KEY` (compared in constant time). Bodies over 8 MiB are refused (413) before they are read
whole. Every error is one JSON object `{"error": {...}}` (errors.py); no traceback reaches a client.

A client that goes away cancels its request: a stream when its connection closes, a plain request through a watch
on the connection while it waits.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.server.bridge import EngineBridge, Job
from engine.server.errors import ApiError, invalid
from engine.server.protocol import Generation, Outcome, Reply, parse_chat, parse_completion

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"  # the bind address
    api_key: str | None = None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def own_names(host: str) -> frozenset[str]:
    """The Host names a request may carry: the loopback names, the bind address, and for a wildcard bind (0.0.0.0,
    ::) this machine's name and addresses."""
    names = {*LOOPBACK_NAMES, host.lower().strip("[]")}
    if host in ("0.0.0.0", "::", ""):
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0].lower() for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
    return frozenset(names)


def host_name(header: str) -> str:
    """The name in a Host header, without the port ("[::1]:8765" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


class Guard:
    """ASGI middleware: the Host check and the API key, before any route runs."""

    def __init__(self, app, settings: ServerSettings) -> None:
        self.app = app
        self.names = own_names(settings.host)
        self.key = settings.api_key.encode() if settings.api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = self._refusal(headers)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[str, str]) -> ApiError | None:
        if host_name(headers.get("host", "")) not in self.names:
            return ApiError(
                403,
                "the Host header does not name this server: use its own address",
                "host_not_allowed",
                type="permission_error",
            )
        if self.key is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                return ApiError(
                    401, "a valid API key is required: send Authorization: Bearer KEY", "invalid_api_key"
                )
        return None


def create_app(bridge: EngineBridge, settings: ServerSettings) -> Starlette:
    def model_card() -> dict:
        return {"id": bridge.model_id, "object": "model", "created": 0, "owned_by": "sentencekv"}

    def check_model(name: str) -> None:
        if name.lower() not in (bridge.model_id.lower(), bridge.model_id.lower() + ".gguf"):
            raise ApiError(
                404,
                f"the model {name!r} is not served here: use {bridge.model_id!r} (GET /v1/models)",
                "model_not_found",
                "model",
            )

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        check_model(request.path_params["name"])
        return JSONResponse(model_card())

    async def health(request: Request) -> Response:
        return JSONResponse(bridge.health())

    async def chat(request: Request) -> Response:
        return await generate(request, parse_chat(await read_json(request)))

    async def completions(request: Request) -> Response:
        return await generate(request, parse_completion(await read_json(request)))

    async def generate(request: Request, gen: Generation) -> Response:
        check_model(gen.model)
        job = Job(gen, asyncio.get_running_loop())
        bridge.submit(job)
        reply = Reply(gen, bridge.model_id)
        try:
            first = await until_disconnect(request, job.items.get())
        except BaseException:
            bridge.cancel(job)
            raise
        if first is None:  # the client went away
            bridge.cancel(job)
            return Response(status_code=499)
        if isinstance(first, ApiError):
            raise first
        if gen.stream:
            return StreamingResponse(
                stream(job, reply, first),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        item = first
        while isinstance(item, str):
            item = await until_disconnect(request, job.items.get())
            if item is None:
                bridge.cancel(job)
                return Response(status_code=499)
        if isinstance(item, ApiError):
            raise item
        return JSONResponse(reply.whole(item))

    async def stream(job: Job, reply: Reply, first) -> AsyncIterator[str]:
        """SSE: the opening chunk, a chunk per text piece, the closing chunk (with `skv`), the usage chunk when
        asked for, then [DONE]. A connection that closes cancels the generator, and with it the job."""
        finished = False
        try:
            yield sse(reply.chunk(first=True))
            item = first
            while isinstance(item, str):
                yield sse(reply.chunk(item))
                item = await job.items.get()
            finished = True
            if isinstance(item, ApiError):  # the headers are sent: the error goes as an event
                yield sse(item.body())
            else:
                assert isinstance(item, Outcome)
                yield sse(reply.chunk(out=item))
                if job.gen.include_usage:
                    yield sse(reply.chunk(out=item, usage_only=True))
            yield "data: [DONE]\n\n"
        finally:
            if not finished:
                bridge.cancel(job)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(
                ApiError(405, f"{request.method} is not allowed on {request.url.path}", "method_not_allowed")
            )
        if exc.status_code == 404:
            return error_response(
                ApiError(404, f"there is no {request.url.path} here: the API is under /v1", "not_found")
            )
        return error_response(ApiError(exc.status_code, str(exc.detail)))

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("a request failed", exc_info=exc)
        return error_response(
            ApiError(
                500,
                f"the server hit an unexpected error ({type(exc).__name__}): see its log",
                "server_error",
                type="server_error",
            )
        )

    app = Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name:path}", model, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: not_found, ApiError: api_error, Exception: unexpected},
    )
    app.add_middleware(Guard, settings=settings)
    return app


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def read_json(request: Request) -> dict:
    """The body as a JSON object: 413 past MAX_BODY (by Content-Length, or while it arrives), 400 when it is not
    JSON or not an object."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid(f"the body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", code="invalid_json")
    return body


def _too_large() -> ApiError:
    return ApiError(413, f"the body is larger than {MAX_BODY >> 20} MiB: send less text", "request_too_large")


async def until_disconnect(request: Request, waiting):
    """Await `waiting`; None when the client disconnects first."""
    task = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        return task.result() if task in done else None
    finally:
        task.cancel()
        gone.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the connection closes (the body is read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
