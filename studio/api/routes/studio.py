"""The web studio: its page at `/studio` and its static files under `/studio/...` (public, no key).

The app is plain files shipped inside the package (`studio/web`: ES modules, CSS, vendored Preact and
htm), so there is no build step. It signs in with a key the user types and calls the public API only;
these routes serve files and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from studio.errors import NotFound

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
# Only these kinds of file are served: the vendor README, licences and anything else stay private.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The page loads only its own files; `connect-src 'self'` keeps the key from going anywhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(prefix="/studio", tags=["studio"], include_in_schema=False)


def studio_file(relative: str) -> FileResponse:
    """Return the web studio's file at `relative` (below `studio/web`), revalidated on every load.

    Raises:
        NotFound: no such file, a kind of file not served, or a path leading out of the folder.
    """
    target = (WEB_ROOT / relative).resolve()
    media_type = MEDIA_TYPES.get(target.suffix)
    if media_type is None or not target.is_relative_to(WEB_ROOT) or not target.is_file():
        raise NotFound(f"the studio has no file {relative!r}", code="file_not_found")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if target.suffix == ".html":
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return FileResponse(target, media_type=media_type, headers=headers)


# Plain `def` routes: FastAPI runs them in its thread pool, so the file checks never block the loop.
@router.get("")
@router.get("/")
def studio_page() -> FileResponse:
    return studio_file("index.html")


@router.get("/{path:path}")
def studio_asset(path: str) -> FileResponse:
    return studio_file(path)
