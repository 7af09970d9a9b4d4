"""The ``cursor`` of a list's ``next`` link: the key of the last row of a page.

A key, not an offset: statuses published while a client walks the pages come before the
cursor and shift nothing, so every older status is returned exactly once. The cursor is
opaque to clients but not secret: it only says where to continue, and the filters and
permissions are applied again on every page.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from uuid import UUID

__all__ = ["BadCursor", "decode", "encode"]


class BadCursor(ValueError):
    """A cursor this API did not write (or one cut short)."""


def encode(created: datetime, uuid: UUID) -> str:
    raw = json.dumps([created.isoformat(), str(uuid)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_text, uuid_text = json.loads(raw)
        created = datetime.fromisoformat(created_text)
        uuid = UUID(uuid_text)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise BadCursor(f"invalid cursor {cursor!r}: use the next link of a page") from None
    if created.tzinfo is None:
        raise BadCursor(f"invalid cursor {cursor!r}: use the next link of a page")
    return created.astimezone(timezone.utc), uuid
