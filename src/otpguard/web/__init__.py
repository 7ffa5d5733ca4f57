"""The HTTP layer: the ASGI app, its routes and middleware."""
