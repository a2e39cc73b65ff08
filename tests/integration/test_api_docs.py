"""/docs and /redoc on a machine without internet: every file the pages load is served by the API itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.support.api import api_client

# Where each page's scripts and styles are, and what must be in them.
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
CONTENT = {
    "swagger-ui-bundle.js": b"SwaggerUIBundle",
    "swagger-ui.css": b".swagger-ui",
    "redoc.standalone.js": b"Redoc",
}


@pytest.fixture
def api(clickhouse_dsn: str) -> TestClient:
    return api_client(clickhouse_dsn)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_nothing_from_another_host_and_every_file_they_load_is_served(
    api: TestClient, page: str
) -> None:
    html = api.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?:|//[a-z]", html.text), f"{page} refers to another host"
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text) + re.findall(r"url: '([^']+)'", html.text)
    urls += re.findall(r'spec-url="([^"]+)"', html.text)
    assert "/openapi.json" in urls and len(urls) >= 3, urls
    for url in urls:
        assert url.startswith("/"), url
        got = api.get(url)
        assert got.status_code == 200, url
        suffix = url[url.rfind(".") :]
        if suffix in TYPES:
            assert got.headers["content-type"].startswith(TYPES[suffix]), (url, got.headers["content-type"])
            head = api.head(url)
            assert (head.status_code, head.content) == (200, b""), url
            assert head.headers["content-length"] == str(len(got.content)), url
        name = url.rsplit("/", 1)[1]
        if name in CONTENT:
            assert CONTENT[name] in got.content, url


def test_only_the_pages_files_are_served(api: TestClient) -> None:
    for name in ("../../etc/passwd", "..%2F..%2Fpyproject.toml", "__init__.py", "", "swagger-ui-bundle.js.map"):
        response = api.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
    document = api.get("/openapi.json").json()
    assert not [path for path in document["paths"] if path.startswith(("/docs", "/redoc"))]


@pytest.mark.parametrize(
    "asked",
    [
        "bytes=abc",
        "bytes=999999999-",
        "bytes=5-1",
        "lines=0-1",
        "bytes=0-0",
        "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(100)),
    ],
)
def test_an_asset_is_sent_whole_whatever_range_is_asked(api: TestClient, asked: str) -> None:
    # Starlette answered bad ranges in plain text (400, 416), and good ones as 206 or multipart parts.
    whole = api.get("/docs/assets/favicon.png")
    got = api.get("/docs/assets/favicon.png", headers={"Range": asked})
    assert (got.status_code, got.content) == (200, whole.content), got.text[:200]
    assert "accept-ranges" not in got.headers and "content-range" not in got.headers
