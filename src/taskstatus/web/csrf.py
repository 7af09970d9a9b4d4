"""Cross-site request forgery defence for the routes that change something.

An authenticator that reads a session cookie would otherwise let any web page make a logged-in
browser cancel or delete its user's tasks. Browsers say where a request comes from: modern ones
send ``Sec-Fetch-Site``, all of them ``Origin`` on a cross-origin POST or DELETE. A request is
refused when either names another origin (unless that origin is trusted); one with neither
header does not come from a browser page, so no cookie was sent on a page's behalf.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["CrossOrigin", "check_same_origin"]

#: Sec-Fetch-Site values of a request a page of this origin, or the user, made.
_SAFE_SITES = frozenset({"same-origin", "none"})


class CrossOrigin(Exception):
    """A state-changing request sent by a page of another origin."""


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_same_origin(request: Request, trusted_origins: Iterable[str] = ()) -> None:
    """Raise :class:`CrossOrigin` unless the request comes from this app's own origin, a
    trusted one, or not from a browser page at all."""
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() in {_origin_of(o) for o in trusted_origins}:
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() in _SAFE_SITES:
            return
        raise CrossOrigin(f"cross-site request refused (Sec-Fetch-Site: {site})")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin.lower() == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise CrossOrigin(f"cross-origin request refused (Origin: {origin})")
