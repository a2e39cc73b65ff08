"""/docs (Swagger UI) and /redoc from the API alone: their scripts and styles are served here, not by a CDN.

FastAPI's own pages load them from cdn.jsdelivr.net, so on a machine without
internet /docs stayed blank. The files come from the fastapi-offline package
(Swagger UI 5, ReDoc 2), which is kept to its files: the pages are FastAPI's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.types import Receive, Scope, Send

from eventpipe.api.error import ApiError

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
# The files the pages use, by name: nothing else of the directory is served.
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Assets change only with the package's version, which changes the process.
CACHE = {"Cache-Control": "public, max-age=86400"}


def install(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets to an app created with docs_url=None and redoc_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # Its default sends the document to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise ApiError(404, "not_found", "no such file")
        return WholeFile(ASSETS_DIR / name, headers=CACHE)


class WholeFile(FileResponse):
    """A file always sent whole, 200, whatever Range the client asks for (HTTP lets a server ignore it).

    Starlette answers a bad Range in plain text (400, 416), outside the API's
    error shape, and many small ranges as a multipart answer of about 100 bytes
    a range; a browser loading a page's script needs none of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.headers["accept-ranges"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name.lower() not in (b"range", b"if-range")]
        await super().__call__({**scope, "headers": headers}, receive, send)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
