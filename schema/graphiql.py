"""GraphiQL served entirely by shopql: no CDN, no third-party origin.

The browser assets (GraphiQL's UMD bundle and stylesheet, React and ReactDOM) are pinned
in `graphiql_assets.json`: exact npm versions, registry tarballs with their
`dist.integrity`, and the files taken from them with their own SRI hashes. `shopql
graphiql-assets` (also run by `shopql serve` when GraphiQL is on and they are missing)
downloads the tarballs from the npm registry with plain HTTP (no node needed), verifies
them, and extracts only those files into a git-ignored directory. The app serves them at
`/graphql/assets/NAME` with long cache lifetimes, and the GraphiQL page references nothing
else: its Content-Security-Policy forbids every other origin.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

logger = logging.getLogger("shopql.graphiql")

MANIFEST_PATH = Path(__file__).with_name("graphiql_assets.json")
ASSETS_ROUTE = "/graphql/assets/{name}"
NPM_REGISTRY = "https://registry.npmjs.org"
# Refuse anything larger: the pinned tarballs are a few MB, their files smaller still.
MAX_TARBALL_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 32 * 1024 * 1024
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The file names carry their package version, so a URL's content never changes.
IMMUTABLE = "public, max-age=31536000, immutable"
_SRI_ALGORITHMS = ("sha256", "sha384", "sha512")  # weakest to strongest


class AssetsError(Exception):
    """The assets could not be fetched, verified or installed."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    tarball: str
    integrity: str


@dataclass(frozen=True)
class AssetFile:
    name: str  # served as /graphql/assets/NAME, stored as DIR/NAME
    package: str
    path: str  # inside the package (the tarball's top directory stripped)
    integrity: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[Path(self.name).suffix]


@dataclass(frozen=True)
class Manifest:
    packages: Mapping[str, Package]
    files: tuple[AssetFile, ...]

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> Manifest:
        packages_raw = raw["packages"]
        files_raw = raw["files"]
        if not isinstance(packages_raw, dict) or not isinstance(files_raw, list):
            raise ValueError("the manifest needs a `packages` object and a `files` list")
        packages = {
            name: Package(name, p["version"], p["tarball"], p["integrity"])
            for name, p in packages_raw.items()
        }
        files = tuple(
            AssetFile(f["name"], f["package"], f["path"], f["integrity"]) for f in files_raw
        )
        for file in files:
            if file.package not in packages:
                raise ValueError(f"{file.name}: unknown package {file.package!r}")
            if Path(file.name).suffix not in CONTENT_TYPES or "/" in file.name:
                raise ValueError(f"{file.name}: not a plain .js or .css file name")
        return cls(packages=packages, files=files)

    def file(self, name: str) -> AssetFile | None:
        return next((f for f in self.files if f.name == name), None)


@functools.cache
def manifest() -> Manifest:
    """The committed pins (schema/graphiql_assets.json)."""
    return Manifest.parse(json.loads(MANIFEST_PATH.read_text(encoding="utf-8")))


def assets_dir(configured: str) -> Path:
    """SHOPQL_GRAPHIQL_ASSETS_DIR as an absolute path (a relative one is taken from the
    working directory at startup)."""
    return Path(configured).expanduser().absolute()


# --------------------------------------------------------------------------- build step


def registry_base(env: Mapping[str, str] | None = None) -> str:
    """The npm registry to download from: npm's own `npm_config_registry` setting (either
    spelling) when set, else the public registry."""
    env = os.environ if env is None else env
    configured = env.get("npm_config_registry") or env.get("NPM_CONFIG_REGISTRY") or ""
    return (configured.strip() or NPM_REGISTRY).rstrip("/")


def tarball_url(package: Package, registry: str) -> str:
    """The package's pinned tarball, on `registry` when that is a mirror."""
    prefix = NPM_REGISTRY + "/"
    if package.tarball.startswith(prefix):
        return f"{registry}/{package.tarball[len(prefix) :]}"
    return package.tarball


def integrity_matches(data: bytes, integrity: str) -> bool:
    """Subresource-Integrity check: the strongest algorithm listed must match one of its
    digests (unknown algorithms are ignored; nothing usable listed means no match)."""
    digests: dict[str, list[bytes]] = {}
    for token in integrity.split():
        algorithm, _, encoded = token.partition("-")
        if algorithm in _SRI_ALGORITHMS and encoded:
            try:
                digest = base64.b64decode(encoded.split("?", 1)[0], validate=True)
            except ValueError:
                continue
            digests.setdefault(algorithm, []).append(digest)
    strongest = next((a for a in reversed(_SRI_ALGORITHMS) if a in digests), None)
    if strongest is None:
        return False
    actual = hashlib.new(strongest, data).digest()
    return actual in digests[strongest]


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def extract(tarball: bytes, files: list[AssetFile], dest: Path) -> None:
    """Write exactly `files` from an npm tarball into `dest`, each verified against its own
    integrity. Member names are only compared, never used as paths: other members,
    traversal names, links and devices are ignored."""
    wanted = {f.path: f for f in files}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for member in archive:
                top, _, inner = member.name.partition("/")
                target = wanted.get(inner)
                if not top or target is None or not member.isfile() or inner in found:
                    continue
                if member.size > MAX_FILE_BYTES:
                    raise AssetsError(f"{target.path}: {member.size} bytes is too large")
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                found[inner] = stream.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetsError(f"unreadable tarball: {exc}") from exc
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise AssetsError(f"not in the tarball: {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for path, data in found.items():
        file = wanted[path]
        if not integrity_matches(data, file.integrity):
            raise AssetsError(f"{file.path}: content does not match its pinned integrity")
        _write_atomically(dest / f"{file.name}.gz", gzip.compress(data, 9, mtime=0))
        _write_atomically(dest / file.name, data)  # last: its presence means installed


def download(client: httpx.Client, package: Package, registry: str) -> bytes:
    """The package tarball, verified against the pinned `dist.integrity`."""
    url = tarball_url(package, registry)
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise AssetsError(f"{url}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_TARBALL_BYTES:
                    raise AssetsError(f"{url}: larger than {MAX_TARBALL_BYTES} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise AssetsError(f"{url}: {exc}") from exc
    data = b"".join(chunks)
    if not integrity_matches(data, package.integrity):
        raise AssetsError(f"{url}: integrity mismatch (expected {package.integrity}); refusing it")
    return data


def missing_files(dest: Path, *, verify: bool = False) -> list[AssetFile]:
    """The pinned files not installed in `dest` (with verify, also those whose content
    does not match their integrity)."""
    missing = []
    for file in manifest().files:
        path = dest / file.name
        if (
            not path.is_file()
            or not (dest / f"{file.name}.gz").is_file()
            or (verify and not integrity_matches(path.read_bytes(), file.integrity))
        ):
            missing.append(file)
    return missing


def install(
    dest: Path,
    *,
    registry: str | None = None,
    client: httpx.Client | None = None,
    force: bool = False,
) -> list[str]:
    """Fetch and install what is missing (everything with force); returns the names of
    the files written. Raises AssetsError when a download or a check fails."""
    pins = manifest()
    needed = list(pins.files) if force else missing_files(dest, verify=True)
    if not needed:
        return []
    registry = registry or registry_base()
    by_package: dict[str, list[AssetFile]] = {}
    for file in needed:
        by_package.setdefault(file.package, []).append(file)
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(60, connect=10), follow_redirects=True)
    try:
        for name, files in by_package.items():
            package = pins.packages[name]
            logger.info("fetching %s@%s from %s", name, package.version, registry)
            extract(download(http, package, registry), files, dest)
    finally:
        if own_client:
            http.close()
    return [f.name for f in needed]


def install_command(directory: str, *, force: bool = False) -> int:
    """`shopql graphiql-assets`: exit 0 when the assets are installed and verified."""
    dest = assets_dir(directory)
    try:
        written = install(dest, force=force)
    except (AssetsError, OSError) as exc:
        print(f"shopql: GraphiQL assets not installed: {exc}", file=sys.stderr)
        return 1
    if written:
        print(f"Installed GraphiQL assets in {dest}: {', '.join(written)}", file=sys.stderr)
    else:
        print(f"GraphiQL assets in {dest} are installed and verified.", file=sys.stderr)
    return 0


def ensure_installed(dest: Path) -> bool:
    """`shopql serve` with GraphiQL on: fetch the assets when missing. A failure is logged,
    never fatal: the API serves anyway and the page tells what to run."""
    if not missing_files(dest):
        return True
    try:
        written = install(dest)
    except (AssetsError, OSError) as exc:
        logger.warning(
            "GraphiQL's assets are missing from %s and could not be fetched (%s): GraphiQL "
            "shows how to install them (`shopql graphiql-assets`)",
            dest,
            exc,
        )
        return False
    logger.info("installed GraphiQL assets in %s: %s", dest, ", ".join(written))
    return True


# --------------------------------------------------------------------------- HTTP


_BOOT_SCRIPT = """\
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  if (typeof React === "undefined" || typeof ReactDOM === "undefined" ||
      typeof GraphiQL === "undefined") {
    root.textContent = "GraphiQL's scripts did not load from this server. " +
      "Reinstall them with `shopql graphiql-assets --force` and reload the page.";
    return;
  }
  var EXAMPLE_QUERY = [
    "# Welcome to shopql's GraphiQL.",
    "#",
    "# Ctrl-Enter (or the play button) runs the query,",
    "# Ctrl-Space completes. To act as a signed-in",
    "# customer or staff member, add the header",
    "# `Authorization: Bearer <token>` (Headers tab).",
    "",
    "{",
    "  products(first: 5) {",
    "    edges {",
    "      node {",
    "        name",
    "      }",
    "    }",
    "  }",
    "}",
    ""
  ].join("\\n");
  var params = new URLSearchParams(window.location.search);
  function updateURL(values) {
    Object.keys(values).forEach(function (key) {
      if (values[key]) { params.set(key, values[key]); } else { params.delete(key); }
    });
    var search = params.toString();
    history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }
  var fetchURL = window.location.href.split("#")[0].split("?")[0];
  var socketURL = new URL(fetchURL);
  socketURL.protocol = socketURL.protocol === "https:" ? "wss:" : "ws:";
  var fetcher = GraphiQL.createFetcher({
    url: fetchURL,
    subscriptionUrl: socketURL.toString()
  });
  function ShopqlGraphiQL() {
    var query = React.useState(params.get("q") || EXAMPLE_QUERY);
    var variables = React.useState(params.get("variables") || undefined);
    var headers = React.useState(undefined);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      query: query[0],
      variables: variables[0],
      headers: headers[0],
      onEditQuery: function (value) { query[1](value); updateURL({ q: value }); },
      onEditVariables: function (value) {
        variables[1](value);
        updateURL({ variables: value });
      },
      onEditHeaders: function (value) { headers[1](value); },
      inputValueDeprecation: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true
    });
  }
  ReactDOM.createRoot(root).render(React.createElement(ShopqlGraphiQL));
})();
"""

_STYLE = """\
body { height: 100%; margin: 0; width: 100%; overflow: hidden; }
#graphiql { height: 100vh; display: flex; }
.shopql-missing { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 3rem auto;
  padding: 0 1rem; }
.shopql-missing code { background: #f3f3f3; padding: 0 .25rem; }
"""

_ICON = (
    "data:image/svg+xml,<svg xmlns=%22http://www.w3.org/2000/svg%22 viewBox=%220 0 100 100%22>"
    "<text y=%22.9em%22 font-size=%2280%22>&#x1f6cd;</text></svg>"
)


def _source_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


# Scripts: this server's files and the one inline boot script; nothing from elsewhere.
# Styles allow inline (GraphiQL's components set them); images and fonts also data: URIs
# (the stylesheet embeds its fonts).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src 'self' {_source_hash(_BOOT_SCRIPT)}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
MISSING_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _assets_base(request: Request) -> str:
    """/graphql/assets/, under whatever prefix the page itself is served."""
    return request.url.path.rstrip("/") + "/assets/"


def _page_html(base: str) -> str:
    tags_head: list[str] = []
    tags_body: list[str] = []
    for file in manifest().files:
        url = escape(base + file.name)
        integrity = escape(file.integrity)
        if file.name.endswith(".css"):
            tags_head.append(f'<link rel="stylesheet" href="{url}" integrity="{integrity}">')
        else:
            tags_body.append(f'<script src="{url}" integrity="{integrity}"></script>')
    head = "\n    ".join(tags_head)
    body = "\n    ".join(tags_body)
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>shopql GraphiQL</title>
    <link rel="icon" href="{_ICON}">
    <style>{_STYLE}</style>
    {head}
  </head>
  <body>
    <div id="graphiql" class="graphiql-container">Loading...</div>
    {body}
    <script>{_BOOT_SCRIPT}</script>
  </body>
</html>
"""


_warned: set[Path] = set()


def _missing_html(dest: Path, missing: list[AssetFile]) -> str:
    pins = manifest()
    packages = ", ".join(
        escape(f"{name}@{pins.packages[name].version}")
        for name in dict.fromkeys(f.package for f in missing)
    )
    files = ", ".join(escape(f.name) for f in missing)
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>shopql GraphiQL: assets not installed</title>
    <style>{_STYLE}</style>
  </head>
  <body>
    <div class="shopql-missing">
      <h1>GraphiQL's assets are not installed</h1>
      <p>This server serves GraphiQL's scripts and stylesheet itself and loads nothing from
      a CDN, but these files are missing from <code>{escape(str(dest))}</code>:
      {files}.</p>
      <p>Install them (from the npm registry: {packages}) with
      <code>shopql graphiql-assets</code>, then reload this page. <code>shopql serve</code>
      does this by itself when it can reach the registry.</p>
      <p>The API works without them: <code>POST</code> GraphQL requests to this URL.</p>
    </div>
  </body>
</html>
"""


def graphiql_page(request: Request, dest: Path) -> Response:
    """GraphiQL, or (503) a page that says which assets are missing and how to get them."""
    missing = missing_files(dest)
    if missing:
        if dest not in _warned:
            _warned.add(dest)
            logger.warning(
                "GraphiQL's assets are missing from %s (%s): run `shopql graphiql-assets`",
                dest,
                ", ".join(f.name for f in missing),
            )
        return HTMLResponse(
            _missing_html(dest, missing),
            status_code=503,
            headers={**_PAGE_HEADERS, "content-security-policy": MISSING_PAGE_POLICY},
        )
    _warned.discard(dest)
    return HTMLResponse(
        _page_html(_assets_base(request)),
        headers={**_PAGE_HEADERS, "content-security-policy": CONTENT_SECURITY_POLICY},
    )


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def asset_endpoint(dest: Path) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for /graphql/assets/{name}: only the manifest's file names
    are served (anything else is 404, so no request names a path on disk)."""

    async def serve_asset(request: Request) -> Response:
        file = manifest().file(request.path_params.get("name", ""))
        if file is None:
            return PlainTextResponse("Not Found", status_code=404)
        path = dest / file.name
        headers = {
            "cache-control": IMMUTABLE,
            "x-content-type-options": "nosniff",
            "cross-origin-resource-policy": "same-origin",
            "vary": "accept-encoding",
        }
        compressed = dest / f"{file.name}.gz"
        if _accepts_gzip(request.headers.get("accept-encoding", "")) and compressed.is_file():
            path = compressed
            headers["content-encoding"] = "gzip"
        if not path.is_file():
            return PlainTextResponse(
                f"{file.name} is not installed: run `shopql graphiql-assets`", status_code=404
            )
        return FileResponse(path, media_type=file.content_type, headers=headers)

    return serve_asset
