"""The HTTP API: FastAPI app over the store's read queries."""
