"""`/v1/keys`: admin keys create, list and revoke API keys (others get 403).

In open mode the local user may make the first key, but only from this machine (loopback): otherwise anyone
who can reach a `--listen` server could make themselves its admin. The first key must be an admin key and
adopts what was made in open mode; the last admin key cannot be revoked over HTTP (see accounts/lifecycle.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from pictale.accounts import lifecycle
from pictale.accounts.keys import KeyStore
from pictale.api.auth import from_loopback, require_admin
from pictale.api.deps import service
from pictale.core.errors import Forbidden
from pictale.core.types import Principal
from pictale.service.ownership import adopt_jobs

router = APIRouter(prefix="/v1", tags=["keys"])
Admin = Annotated[Principal, Depends(require_admin)]


def key_store(request: Request) -> KeyStore:
    return request.app.state.keys


Keys = Annotated[KeyStore, Depends(key_store)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    admin: bool = False


@router.post("/keys", status_code=201)
async def create_key(request: Request, admin: Admin, body: KeyCreate) -> dict:
    """The response carries the key and its webhook secret: the only time either is ever shown."""
    if request.app.state.auth.open_mode and not from_loopback(request):
        raise Forbidden(
            "in open mode the first API key can only be made on the server itself: run "
            "`pictale keys create NAME --admin` there, or POST /v1/keys from 127.0.0.1"
        )
    basic_users = bool(request.app.state.auth.pairs)
    new = await run_in_threadpool(
        lambda: lifecycle.create_key(request.app.state.db, body.name, body.admin, basic_users=basic_users)
    )
    if new.adopted is not None:
        adopt_jobs(service(request).queue, lifecycle.LOCAL_OWNER, new.record.id)
    return new.to_json()


@router.get("/keys")
def list_keys(admin: Admin, keys: Keys) -> dict:
    return {"object": "list", "data": [k.to_json() for k in keys.list()]}


@router.delete("/keys/{key_id}")
def revoke_key(request: Request, admin: Admin, key_id: str) -> dict:
    revoked = lifecycle.revoke_key(request.app.state.db, key_id, keep_an_admin=True)
    return {"id": revoked.record.id, "deleted": True}
