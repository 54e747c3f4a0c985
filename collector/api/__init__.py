"""The HTTP API (aiohttp) and its command-line clients: handlers, parameters, OpenAPI, auth and
TLS."""
