"""The REST API: ``create_app(authenticate)`` returns an ASGI app to mount or serve.

Needs the ``web`` extra (``pip install 'taskstatus[web]'``). See docs/web.md.
"""

from __future__ import annotations

from .app import create_app
from .principal import Authenticator, Principal

__all__ = ["Authenticator", "Principal", "create_app"]
