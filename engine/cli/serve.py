"""`skv serve`: an OpenAI-compatible HTTP server on the local model (engine/server/), until Ctrl-C.

Loopback only unless --api-key is given (or SKV_API_KEY is set): any other bind address needs one. --port 0 takes
a free port; the address is printed on stderr as `skv: serving MODEL at http://HOST:PORT/v1`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

from engine import params as defaults
from engine.cli.errors import UsageError
from engine.cli.options import add_session_options, cli_store, parse_ranges, session_config

API_KEY_ENV = "SKV_API_KEY"
DEFAULT_MAX_TOKENS = defaults.SERVER_MAX_TOKENS


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    add_session_options(p)
    # the shared options, as a server reads them: documents are optional, and the sampling options are what a
    # request that does not say gets
    options = p._option_string_actions
    options["--doc"].required = False
    options[
        "--doc"
    ].help = "document file that opens every conversation (repeatable; prefilled once at start)"
    options[
        "--max-tokens"
    ].help = f"answer length limit of a request without max_tokens (default {DEFAULT_MAX_TOKENS})"
    options["--temperature"].help = "temperature of a request without one (default 0: greedy)"
    options["--stop"].help = "end every answer before this text (repeatable; added to a request's stop)"
    p.set_defaults(max_tokens=DEFAULT_MAX_TOKENS)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port", type=int, default=defaults.SERVER_PORT, help="port (default %(default)s; 0: a free one)"
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require Authorization: Bearer KEY (default: ${API_KEY_ENV}); needed off loopback",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=defaults.SERVER_QUEUE,
        help="requests that may wait for the model; more are refused with 429 (default %(default)s)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engine.documents import DocumentError, load_document
    from engine.server.app import ServerSettings, create_app, is_loopback
    from engine.server.bridge import EngineBridge, EngineStartError

    if not is_loopback(args.host) and not args.api_key:
        raise UsageError(
            f"listening on {args.host} opens the model to the network: give --api-key "
            f"(or set {API_KEY_ENV}), or keep the default 127.0.0.1"
        )
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_queue < 1:
        raise UsageError(f"--max-queue must be at least 1, got {args.max_queue}")
    try:
        config = session_config(args)
        docs = tuple(load_document(d) for d in args.doc)
        ranges = parse_ranges(args.range, len(docs))
    except (ValueError, DocumentError) as e:
        raise UsageError(str(e)) from None
    try:
        sock = socket.create_server((args.host, args.port), family=_family(args.host))
    except OSError as e:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror or e}): choose another --port"
        ) from None
    bridge = EngineBridge(
        config,
        docs,
        ranges,
        cli_store(args),
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        stop=tuple(args.stop),
    )
    try:
        try:
            bridge.start()
        except EngineStartError as e:
            raise (UsageError(str(e)) if args.model or args.doc else RuntimeError(str(e))) from None
        app = create_app(bridge, ServerSettings(args.host, args.api_key))
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"skv: serving {bridge.model_id} at http://{shown}:{port}/v1 (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        )
        # uvicorn stops on SIGINT and SIGTERM, then raises the signal again for the handler before it: a no-op
        # here, so a clean shutdown ends with exit code 0
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0
    finally:
        sock.close()
        bridge.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
