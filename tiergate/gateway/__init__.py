"""The HTTP face: `/v1` (OpenAI-compatible), `/admin`, `/metrics`, `/healthz`.

`app.create_app(config)` builds the ASGI app; `core.Gateway` holds the request path (route, dispatch with
fallback and circuit breakers, accounting, capture); `api` is the thin HTTP layer over it.
"""
