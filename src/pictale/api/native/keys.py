"""`/v1/keys`: admin keys create, list and revoke API keys (others get 403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from pictale.accounts.keys import KeyStore
from pictale.api.auth import require_admin
from pictale.core.types import Principal

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
def create_key(admin: Admin, keys: Keys, body: KeyCreate) -> dict:
    """The response carries the key itself, `key`: the only time it is ever shown."""
    record, plaintext = keys.create(body.name, admin=body.admin)
    return record.to_json() | {"key": plaintext}


@router.get("/keys")
def list_keys(admin: Admin, keys: Keys) -> dict:
    return {"object": "list", "data": [k.to_json() for k in keys.list()]}


@router.delete("/keys/{key_id}")
def revoke_key(admin: Admin, keys: Keys, key_id: str) -> dict:
    record = keys.revoke(key_id)
    return {"id": record.id, "deleted": True}
