"""`outpace serve`: the command line of the OpenAI-compatible server.

Only argparse runs at import time; the web stack, torch and the models load when the command
runs, so `outpace --help` stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable
from typing import Any

from outpace.errors import OutpaceError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `serve` command."""
    from outpace.cli import DEFAULT_DRAFTER, add_engine_args

    p = sub.add_parser(
        "serve",
        help="serve an OpenAI-compatible API that decodes speculatively",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /health and /metrics. "
        "One generation runs at a time; others wait in a bounded queue (full queue: 429).",
    )
    add_engine_args(p)
    p.add_argument("--drafter", default=DEFAULT_DRAFTER,
                   help=f"none | prompt-lookup[:...] | draft-model:MODEL (default {DEFAULT_DRAFTER}); "
                   "requests may turn it off with \"speculative\": false")
    p.add_argument("--draft-length", type=_at_least(0), default=4,
                   help="default draft tokens (or tree nodes) per step; requests may override it")
    p.add_argument("--adaptive", action="store_true",
                   help="choose each step's draft length (at most --draft-length) from measured costs; "
                   "requests may override it")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--max-queue", type=_at_least(0), default=16,
                   help="requests that may wait while one generates; more get 429 (default 16)")
    p.add_argument("--max-tokens", dest="default_max_tokens", type=_at_least(1), default=512,
                   help="max_tokens of chat requests that do not set it (default 512, capped by the context)")
    p.add_argument("--model-name", default=None,
                   help="model id in /v1/models and the 'model' field (default: the target's name)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load the models once, then serve until interrupted."""
    uvicorn = _import_web_stack()
    from outpace.backends.torch import set_threads
    from outpace.cli import engine_spec
    from outpace.engine import build, engine_label
    from outpace.serve.app import create_app
    from outpace.serve.service import ServeSettings

    set_threads(args.threads)
    _warn_if_exposed(args.host)
    spec = engine_spec(args)
    print(f"outpace: loading {args.target} ({engine_label(spec.backend, spec.dtype, spec.quant)}) with drafter {args.drafter} ...",
          file=sys.stderr)
    engine = build(spec)
    model_id = args.model_name or engine.target.name
    aliases = tuple(n for n in {engine.target.name, args.target} if n != model_id)
    settings = ServeSettings(model_id, aliases, max_queue=args.max_queue, draft_length=args.draft_length,
                             adaptive=args.adaptive, default_max_tokens=args.default_max_tokens)
    app = create_app(engine, settings)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"outpace: serving model '{model_id}' at http://{host}:{args.port}/v1 "
          f"(drafter {args.drafter}, draft length {args.draft_length}, queue {args.max_queue})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


def _import_web_stack() -> Any:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise OutpaceError(f"outpace serve needs the web stack ({err.name} is missing): "
                           "pip install 'outpace[serve]'") from None
    return uvicorn


def _warn_if_exposed(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(f"outpace: warning: listening on {host}: the API has no authentication; "
              "anyone who can reach this address can use it", file=sys.stderr)


def _port(text: str) -> int:
    port = _at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {port}")
    return port


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse
