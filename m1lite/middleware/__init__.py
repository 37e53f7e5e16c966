"""Pure ASGI middlewares that guard every request before the app sees it.

They are plain ASGI callables rather than Starlette's `BaseHTTPMiddleware`, because
the ingest hot path cannot afford a task group and a copied request per call.
"""
