"""aiohttp: the application factory, middlewares, one module per resource,
the msgspec schemas and the JSON/MessagePack codec."""
