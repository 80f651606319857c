"""GraphiQL works offline: its assets come from the npm registry through a verified build
step (never a CDN), shopql serves them itself, and a headless Chromium that may reach
nothing but the local server opens /graphql, runs a query and reads the result.

The browser test drives Debian's /usr/bin/chromium through playwright (no browser
download). Without it the test is skipped locally and fails in CI (CI=true).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import socket
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import DatabaseFactory, make_client
from live_server import live_server

from models.db import Database
from schema import graphiql
from schema.graphiql import AssetFile, AssetsError, Manifest, Package

ROOT = Path(__file__).resolve().parent.parent
SHOPQL = str(Path(sys.executable).with_name("shopql"))
CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
QUERY = "{ products(first: 2) { edges { node { name } } } }"


def _sri(data: bytes, algorithm: str = "sha384") -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _tarball(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A gzipped tar of (name, content, symlink target) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = link
                archive.addfile(info)
            else:
                assert content is not None
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --------------------------------------------------------------------------- build step


def test_integrity_check_follows_subresource_integrity() -> None:
    data = b"console.log(1)"
    assert graphiql.integrity_matches(data, _sri(data, "sha512"))
    assert graphiql.integrity_matches(data, f"{_sri(b'other', 'sha256')} {_sri(data)}")
    # The strongest algorithm listed decides: a matching weaker hash is not enough.
    assert not graphiql.integrity_matches(data, f"{_sri(data, 'sha256')} {_sri(b'x', 'sha512')}")
    assert not graphiql.integrity_matches(data, "md5-AAAA")
    assert not graphiql.integrity_matches(data, "")
    assert not graphiql.integrity_matches(data, "sha512-not*base64")


def test_the_manifest_pins_exact_versions_on_the_npm_registry() -> None:
    pins = graphiql.manifest()
    assert {f.package for f in pins.files} == set(pins.packages)
    for package in pins.packages.values():
        assert package.version.replace(".", "").isdigit(), package  # exact, no range
        assert package.tarball == (
            f"https://registry.npmjs.org/{package.name}/-/{package.name}-{package.version}.tgz"
        )
        assert package.integrity.startswith("sha512-")
    assert [f.name for f in pins.files if f.name.endswith(".js")][-1].startswith("graphiql-")


def test_registry_mirror_from_npm_config() -> None:
    react = graphiql.manifest().packages["react"]
    assert graphiql.registry_base({}) == "https://registry.npmjs.org"
    mirror = graphiql.registry_base({"npm_config_registry": "https://npm.corp.test/repo/"})
    assert mirror == "https://npm.corp.test/repo"
    assert graphiql.registry_base({"NPM_CONFIG_REGISTRY": mirror}) == mirror
    assert graphiql.tarball_url(react, mirror) == (
        "https://npm.corp.test/repo/react/-/react-18.2.0.tgz"
    )


def test_download_refuses_a_tarball_that_does_not_match_its_integrity() -> None:
    package = Package("react", "18.2.0", "https://registry.npmjs.org/react/-/x.tgz", _sri(b"a"))
    requested: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        if request.url.path.endswith("x.tgz"):
            return httpx.Response(200, content=b"tampered")
        return httpx.Response(404)

    with httpx.Client(transport=httpx.MockTransport(registry)) as client:
        with pytest.raises(AssetsError, match="integrity mismatch"):
            graphiql.download(client, package, "https://mirror.test")
        assert requested == ["https://mirror.test/react/-/x.tgz"]
        assert (
            graphiql.download(
                client,
                replace(package, integrity=_sri(b"tampered", "sha512")),
                "https://mirror.test",
            )
            == b"tampered"
        )
        with pytest.raises(AssetsError, match="HTTP 404"):
            graphiql.download(
                client,
                replace(package, tarball="https://registry.npmjs.org/y"),
                "https://mirror.test",
            )


def test_extract_takes_only_the_pinned_files_and_ignores_hostile_members(
    tmp_path: Path,
) -> None:
    good = b"/* react */ window.React = {};"
    wanted = AssetFile("react-1.0.0.js", "react", "umd/react.production.min.js", _sri(good))
    tarball = _tarball(
        [
            ("package/umd/react.production.min.js", None, "/etc/passwd"),  # a link: ignored
            ("../../evil.js", b"evil", None),
            ("/tmp/absolute-evil.js", b"evil", None),
            ("package/../../escape.js", b"evil", None),
            ("package/umd/../../../umd/react.production.min.js", b"evil", None),
            ("package/umd/react.production.min.js", good, None),
            ("package/package.json", b"{}", None),
        ]
    )
    dest = tmp_path / "nested" / "assets"
    graphiql.extract(tarball, [wanted], dest)
    assert sorted(p.name for p in dest.iterdir()) == ["react-1.0.0.js", "react-1.0.0.js.gz"]
    assert (dest / "react-1.0.0.js").read_bytes() == good
    assert gzip.decompress((dest / "react-1.0.0.js.gz").read_bytes()) == good
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["nested/assets/react-1.0.0.js", "nested/assets/react-1.0.0.js.gz"]
    assert not Path("/tmp/absolute-evil.js").exists()

    # A pinned file whose content differs from its own integrity is refused, unwritten.
    other = tmp_path / "other"
    with pytest.raises(AssetsError, match="does not match"):
        graphiql.extract(tarball, [replace(wanted, integrity=_sri(b"else"))], other)
    assert not other.exists() or not any(other.iterdir())
    # Only a link under the pinned name: nothing to take.
    with pytest.raises(AssetsError, match="not in the tarball"):
        graphiql.extract(
            _tarball([("package/umd/react.production.min.js", None, "/etc/passwd")]),
            [wanted],
            other,
        )
    with pytest.raises(AssetsError, match="unreadable"):
        graphiql.extract(b"not a tarball", [wanted], other)


def test_install_fetches_from_the_configured_registry_and_verifies(
    assets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole step against a registry mirror (tarballs rebuilt from the real files)."""
    real = graphiql.manifest()
    tarballs: dict[str, bytes] = {}
    for name in real.packages:
        files = [f for f in real.files if f.package == name]
        tarballs[name] = _tarball(
            [(f"package/{f.path}", (assets_dir / f.name).read_bytes(), None) for f in files]
        )
    pins = Manifest(
        packages={
            name: replace(p, integrity=_sri(tarballs[name], "sha512"))
            for name, p in real.packages.items()
        },
        files=real.files,
    )
    monkeypatch.setattr(graphiql, "manifest", lambda: pins)
    monkeypatch.setenv("npm_config_registry", "https://mirror.test/npm/")
    requested: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        name = request.url.path.split("/")[2]
        return httpx.Response(200, content=tarballs[name])

    dest = tmp_path / "assets"
    with httpx.Client(transport=httpx.MockTransport(registry)) as client:
        assert graphiql.install(dest, client=client) == [f.name for f in real.files]
        assert sorted(requested) == sorted(
            f"https://mirror.test/npm/{p.name}/-/{p.name}-{p.version}.tgz"
            for p in real.packages.values()
        )
        assert graphiql.missing_files(dest, verify=True) == []
        assert graphiql.install(dest, client=client) == []  # installed: nothing fetched
        assert len(requested) == len(real.packages)
        # A damaged file is noticed and only its package fetched again.
        css = next(f for f in real.files if f.name.endswith(".css"))
        (dest / css.name).write_bytes(b"damaged")
        assert graphiql.install(dest, client=client) == [css.name]
        assert requested[-1].endswith(f"/graphiql-{real.packages['graphiql'].version}.tgz")
        assert (dest / css.name).read_bytes() == (assets_dir / css.name).read_bytes()


def test_serve_hook_logs_and_goes_on_when_the_registry_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(*_args: object, **_kw: object) -> list[str]:
        raise AssetsError("https://registry.npmjs.org/react/-/react-18.2.0.tgz: unreachable")

    monkeypatch.setattr(graphiql, "install", unreachable)
    with caplog.at_level(logging.WARNING, logger="shopql.graphiql"):
        assert graphiql.ensure_installed(tmp_path / "assets") is False
    assert "could not be fetched" in caplog.text and "shopql graphiql-assets" in caplog.text
    assert graphiql.install_command(str(tmp_path / "assets")) == 1


# --------------------------------------------------------------------------- HTTP


async def test_page_references_only_local_assets_under_a_strict_policy(
    catalog_db: Database, assets_dir: Path
) -> None:
    async with make_client(catalog_db, graphiql_assets_dir=str(assets_dir)) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    for file in graphiql.manifest().files:
        assert f'"/graphql/assets/{file.name}" integrity="{file.integrity}"' in html
    assert "unpkg" not in html and "jsdelivr" not in html
    assert 'src="http' not in html and 'href="http' not in html
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'sha256-" in policy
    assert "connect-src 'self'" in policy
    assert "http" not in policy  # no origin but this one


async def test_missing_assets_page_says_what_to_run(
    catalog_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "no-assets"
    async with make_client(catalog_db, graphiql_assets_dir=str(empty)) as client:
        with caplog.at_level(logging.WARNING, logger="shopql.graphiql"):
            page = await client.get("/graphql", headers={"accept": "text/html"})
        asset = await client.get("/graphql/assets/" + graphiql.manifest().files[0].name)
    assert page.status_code == 503
    assert "<h1>GraphiQL's assets are not installed" in page.text
    assert "shopql graphiql-assets" in page.text and str(empty) in page.text
    assert "<script" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "shopql graphiql-assets" in caplog.text
    assert asset.status_code == 404 and "shopql graphiql-assets" in asset.text


async def test_assets_are_served_with_content_types_and_long_caching(
    catalog_db: Database, assets_dir: Path
) -> None:
    async with make_client(catalog_db, graphiql_assets_dir=str(assets_dir)) as client:
        for file in graphiql.manifest().files:
            url = f"/graphql/assets/{file.name}"
            plain = await client.get(url, headers={"accept-encoding": "identity"})
            assert plain.status_code == 200
            assert plain.content == (assets_dir / file.name).read_bytes()
            assert graphiql.integrity_matches(plain.content, file.integrity)
            kind = "text/css" if file.name.endswith(".css") else "text/javascript"
            assert plain.headers["content-type"] == f"{kind}; charset=utf-8"
            assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert plain.headers["x-content-type-options"] == "nosniff"
            assert "content-encoding" not in plain.headers
            packed = await client.get(url, headers={"accept-encoding": "gzip"})
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.content == plain.content  # httpx decodes it
            assert packed.headers["content-type"] == plain.headers["content-type"]


async def test_unknown_asset_names_and_traversal_are_404(
    catalog_db: Database, assets_dir: Path
) -> None:
    secret = (ROOT / "app.py").read_text()[:200]
    async with make_client(catalog_db, graphiql_assets_dir=str(assets_dir)) as client:
        for path in (
            "/graphql/assets/react.js",
            "/graphql/assets/graphiql-3.8.3.min.js.gz",
            "/graphql/assets/..%2F..%2Fapp.py",
            "/graphql/assets/%2e%2e/%2e%2e/app.py",
            "/graphql/assets/../app.py",
            "/graphql/assets/",
        ):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert secret not in response.text
        raw = await client.get(httpx.URL("http://shop.test/graphql/assets/../../app.py"))
        assert raw.status_code == 404
    async with make_client(catalog_db, graphiql=False, graphiql_assets_dir=str(assets_dir)) as off:
        name = graphiql.manifest().files[0].name
        assert (await off.get(f"/graphql/assets/{name}")).status_code == 404


# --------------------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    databases: DatabaseFactory, assets_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`shopql serve` (a real uvicorn) in debug mode, GraphiQL on, on a copy of the catalog."""
    url = databases.copy()
    env = {"SHOPQL_GRAPHIQL_ASSETS_DIR": str(assets_dir), "SHOPQL_WEBHOOK_WORKER": "0"}
    try:
        with live_server(url, tmp_path_factory.mktemp("graphiql"), env=env) as running:
            yield running.base_url
    finally:
        databases.drop(url)


def _chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def test_graphiql_runs_a_query_in_headless_chromium_offline(server: str) -> None:
    from playwright.sync_api import Route, expect, sync_playwright

    executable = _chromium()
    expected = httpx.post(f"{server}/graphql", json={"query": QUERY}).json()["data"]
    names = [edge["node"]["name"] for edge in expected["products"]["edges"]]
    assert len(names) == 2
    local = {urlsplit(server).hostname, "localhost"}
    leaked: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in local:
            route.continue_()
        else:
            leaked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            context = browser.new_context()
            context.route("**/*", only_local)
            context.add_init_script(
                "window.__violations = [];"
                "document.addEventListener('securitypolicyviolation', e =>"
                " window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
            )
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server}/graphql", wait_until="load")
            editor = page.locator(".graphiql-query-editor .CodeMirror")
            expect(editor).to_be_visible(timeout=30_000)
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.insert_text(QUERY)
            assert editor.evaluate("e => e.CodeMirror.getValue()") == QUERY
            page.locator(".graphiql-execute-button").click()
            result = page.locator(".result-window")
            for name in names:
                expect(result).to_contain_text(name, timeout=30_000)
            shown = json.loads(
                page.locator(".result-window .CodeMirror").evaluate("e => e.CodeMirror.getValue()")
            )
            assert shown["data"] == expected
            violations = page.evaluate("window.__violations")
        finally:
            browser.close()
    assert leaked == [], leaked
    assert errors == [], errors
    assert violations == [], violations
