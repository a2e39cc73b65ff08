"""The HTTP API: FastAPI app over the store's read queries, and the server thread that serves it."""
