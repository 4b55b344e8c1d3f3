"""Dependencies the routes share; tests swap them with app.dependency_overrides."""
from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from serve.auth import DEV_PRINCIPAL, KEYLESS_REFUSAL, AuthError, Principal, is_loopback
from serve.service import KbqaService

log = logging.getLogger(__name__)


def get_service(request: Request) -> KbqaService:
    return request.app.state.service


def get_principal(request: Request) -> Principal:
    keys, state = request.app.state.keys, request.app.state
    if not state.keyed and keys.ever_keyed():   # one way only: a key was created since the start
        state.keyed = True
        log.warning("an API key now exists: keyless mode is over, every request needs a key")
    if not state.keyed:
        if not is_loopback(request.client.host if request.client else None):
            raise AuthError(403, KEYLESS_REFUSAL)
        return DEV_PRINCIPAL
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    try:
        principal = keys.authenticate(key)
    except AuthError:
        # Key guessing: each failure spends the client address's budget; past it, 429 whatever the key.
        request.app.state.auth_failures.take(request.client.host if request.client else "unknown")
        raise
    request.app.state.limiter.take(principal.key_id)
    return principal


def slice_keys(request: Request, principal: Principal) -> list[str] | None:
    """The keys bound to the caller's own filter, whose answers, feedback and gaps it may read (None: the caller is
    bound to no filter and reads everything its collections hold)."""
    return request.app.state.keys.sharing_slice(principal.filter) if principal.filter is not None else None


def require(scope: str):
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.allows(scope):
            raise AuthError(403, f"this API key lacks the {scope!r} scope")
        return principal
    return check


ServiceDep = Annotated[KbqaService, Depends(get_service)]
QueryKey = Annotated[Principal, Depends(require("query"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
