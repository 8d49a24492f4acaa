"""`outpace serve`: an OpenAI-compatible HTTP server that decodes speculatively.

Modules: `schemas` (pydantic request/response bodies), `errors` (the OpenAI error shape),
`service` (request -> generation plan, statistics -> `speculative` echo), `scheduler` (bounded
FIFO queue and the single generation worker), `metrics` (Prometheus text), `responses` (chat
and text-completion objects), `transport` (SSE, disconnects, request metrics), `app` (the
FastAPI app, `create_app(engine)`), `loadtest` (a loopback load generator) and `cli`.

Nothing heavy is imported here, so `outpace --help` stays fast.
"""
