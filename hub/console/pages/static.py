"""The console's static files (one hand-written stylesheet, small scripts): read once, served from memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

router = APIRouter()

STATIC = Path(__file__).resolve().parent.parent / "static"
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
FILES: dict[str, tuple[bytes, str, str]] = {
    path.name: (data, TYPES[path.suffix], hashlib.sha256(data).hexdigest()[:16])
    for path in sorted(STATIC.iterdir())
    if path.suffix in TYPES
    for data in [path.read_bytes()]
}


@router.get("/static/{name}")
async def static_file(name: str, request: Request) -> Response:
    """Public: the same files for everyone, no data (listed in the route audit)."""
    found = FILES.get(name)
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    data, media_type, etag = found
    headers = {
        "ETag": f'"{etag}"',
        "Cache-Control": "public, max-age=3600",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == f'"{etag}"':
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)
