"""The bearer token: one shared secret per server, generated at start unless given.

Every /api/ call carries ``Authorization: Bearer TOKEN``; the page asks for it once and keeps it
in the tab's sessionStorage. Compared in constant time. `/healthz`, the page and its scripts
need none (they hold no data)."""
from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

TOKEN_BYTES = 24


def new_token() -> str:
    """A fresh URL-safe token (192 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_matches(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 (with WWW-Authenticate) unless the request has the token."""
    token = request.app.state.settings.token
    if not token_matches(request, token):
        raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer TOKEN; the server "
                            "printed it at start)", headers={"WWW-Authenticate": "Bearer"})
