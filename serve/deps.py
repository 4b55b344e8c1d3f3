"""Dependencies the routes share; tests swap them with app.dependency_overrides."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serve.service import KbqaService


def get_service(request: Request) -> KbqaService:
    return request.app.state.service


ServiceDep = Annotated[KbqaService, Depends(get_service)]
