from fastapi import APIRouter, Request, Response

from serve.auth import AuthError
from serve.deps import AdminKey
from serve.schemas import ErrorResponse, KeyCreate, KeyCreated, KeyOut

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _unbound(key) -> None:
    # A key bound to some collections must not mint a key that reaches others.
    if key.collections is not None or key.filter is not None:
        raise AuthError(403, "only an admin key bound to no collection and no filter may manage keys")


@router.post("", status_code=201, response_model=KeyCreated, responses={403: {"model": ErrorResponse}})
async def create_key(body: KeyCreate, request: Request, key: AdminKey) -> KeyCreated:
    """The key is in this answer only: it is stored hashed."""
    _unbound(key)
    secret = request.app.state.keys.create(body.name, body.scope, body.collections or None, body.filter)
    return KeyCreated(key=secret, key_id=secret.split("_")[1])


@router.get("", response_model=list[KeyOut])
async def list_keys(request: Request, key: AdminKey) -> list[KeyOut]:
    _unbound(key)
    return [KeyOut(**k) for k in request.app.state.keys.list()]


@router.delete("/{key_id}", status_code=204, responses={404: {"model": ErrorResponse}})
async def revoke_key(key_id: str, request: Request, key: AdminKey) -> Response:
    _unbound(key)
    try:
        request.app.state.keys.revoke(key_id)
    except KeyError as exc:
        raise AuthError(404, exc.args[0]) from exc
    return Response(status_code=204)
