"""`static/` served compressed and cached (the ASGI app mounted at /static, one per app).

- gzip: every text file of 1 KiB or more is compressed once (level 9, on its first request, in a thread) and kept in
  memory; a request that accepts gzip gets those bytes (`Content-Encoding: gzip`, `Vary: Accept-Encoding`).
  plotly.min.js goes from 5.2 MB to 1.6 MB. No brotli: no brotli package is installed.
- caching: pages link every asset through `url(name)` -> `/static/name?v=<content hash>`; a request carrying the
  current hash gets `Cache-Control: public, max-age=31536000, immutable` (a new file is a new address), any other
  `no-cache` with a strong ETag, and `If-None-Match` -> 304.
A file changed on disk is noticed by its (mtime, size) and hashed and compressed again.
"""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import anyio

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
         ".json": "application/json", ".map": "application/json", ".html": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class _Asset:
    stamp: tuple[int, int]  # (mtime_ns, size) of the file these bytes were made from
    digest: str  # first 16 hex digits of the sha256 of the file
    body: bytes
    gz: bytes | None  # gzip of body (None: not worth it / not text)
    media_type: str


class StaticAssets:
    """ASGI app for `static/`: hashed URLs, gzip kept in memory, immutable or revalidated caching."""

    def __init__(self, directory: Path, compress_min: int = 1024):
        self.directory = Path(directory).resolve()
        self.compress_min = compress_min
        self._assets: dict[str, _Asset] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path | None:
        p = (self.directory / name).resolve()
        return p if p.is_relative_to(self.directory) and p.is_file() else None

    def asset(self, name: str) -> _Asset | None:
        """The file's bytes, hash and gzip (built at most once per version of the file); None if no such file."""
        p = self._path(name)
        if p is None:
            return None
        st = p.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            a = self._assets.get(name)
        if a is not None and a.stamp == stamp:
            return a
        body = p.read_bytes()
        media = TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        gz = None
        if len(body) >= self.compress_min and media.startswith(TEXT_TYPES):
            gz = gzip.compress(body, compresslevel=9, mtime=0)
            gz = gz if len(gz) < len(body) else None
        a = _Asset(stamp, hashlib.sha256(body).hexdigest()[:16], body, gz, media)
        with self._lock:
            self._assets[name] = a
        return a

    def url(self, name: str) -> str:
        """`/static/<name>?v=<hash>` (the address pages use; cached for a year). Unknown files keep the plain path."""
        a = self.asset(name)
        return f"/static/{name}" if a is None else f"/static/{name}?v={a.digest}"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        name = scope["path"][len(scope.get("root_path", "")):] if scope["path"].startswith(scope.get("root_path", "")) \
            else scope["path"]
        name = name.lstrip("/")
        if scope["method"] not in ("GET", "HEAD"):
            return await _plain(send, 405, b"Method Not Allowed", [(b"allow", b"GET, HEAD")])
        a = await anyio.to_thread.run_sync(self.asset, name) if name else None
        if a is None:
            return await _plain(send, 404, b"Not Found")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        gzip_ok = a.gz is not None and "gzip" in headers.get("accept-encoding", "")
        etag = f'"{a.digest}{"-gz" if gzip_ok else ""}"'
        out = [(b"cache-control", (IMMUTABLE if query.get("v") == [a.digest] else REVALIDATE).encode()),
               (b"etag", etag.encode()), (b"content-type", a.media_type.encode())]
        if a.gz is not None:
            out.append((b"vary", b"Accept-Encoding"))
        match = headers.get("if-none-match", "")
        if match and (match.strip() == "*" or etag in [t.strip() for t in match.split(",")]):
            return await _plain(send, 304, b"", out)
        body = a.gz if gzip_ok else a.body
        if gzip_ok:
            out.append((b"content-encoding", b"gzip"))
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _plain(send, status: int, body: bytes, headers: list | None = None) -> None:
    hs = list(headers or [])
    if status != 304:
        hs += [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body if status != 304 else b""})
