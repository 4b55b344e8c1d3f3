"""Dependencies the routes share; tests swap them with app.dependency_overrides."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serve.auth import DEV_PRINCIPAL, AuthError, Principal
from serve.service import KbqaService


def get_service(request: Request) -> KbqaService:
    return request.app.state.service


def get_principal(request: Request) -> Principal:
    keys = request.app.state.keys
    if not keys.any_active():
        return DEV_PRINCIPAL  # local development mode: `kbqa serve` binds loopback only
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    principal = keys.authenticate(key)
    request.app.state.limiter.take(principal.key_id)
    return principal


def require(scope: str):
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.allows(scope):
            raise AuthError(403, f"this API key lacks the {scope!r} scope")
        return principal
    return check


ServiceDep = Annotated[KbqaService, Depends(get_service)]
QueryKey = Annotated[Principal, Depends(require("query"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
