"""`/v1/characters`: story characters of the calling key (`<be-char:name>` in any dialect's prompt).

The schemas are strict like the job API's: an unknown field is a 422 naming it, so a typo ("negative")
never silently drops what the client meant. Field values are checked by the store (one set of messages
for the API and the CLI).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from pictale.api.auth import require_auth
from pictale.avatars.characters import CharacterStore
from pictale.core.types import Principal

router = APIRouter(prefix="/v1", tags=["characters"])
Caller = Annotated[Principal, Depends(require_auth)]


def store(request: Request) -> CharacterStore:
    return request.app.state.characters


Store = Annotated[CharacterStore, Depends(store)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CharacterCreate(_Strict):
    name: str
    description: str | None = ""
    """The prompt prefix `<be-char:name>` becomes."""
    avatars: str | None = ""
    """Avatar tokens only, e.g. `<be-face:lucy:0.4> <be-lora:toy:0.8>`."""
    negative_prompt: str | None = ""
    seed_policy: str | None = None
    """"random" or "fixed"; default "fixed" when a seed is given."""
    seed: int | None = None


class CharacterPatch(_Strict):
    """Only the fields sent change; `name` renames."""

    name: str | None = None
    description: str | None = None
    avatars: str | None = None
    negative_prompt: str | None = None
    seed_policy: str | None = None
    seed: int | None = None


@router.post("/characters", status_code=201)
def create_character(caller: Caller, characters: Store, body: CharacterCreate) -> dict:
    return characters.create(caller.id, **body.model_dump()).to_json()


@router.get("/characters")
def list_characters(caller: Caller, characters: Store) -> dict:
    return {"object": "list", "data": [c.to_json() for c in characters.list(caller.id)]}


@router.get("/characters/{name}")
def show_character(caller: Caller, characters: Store, name: str) -> dict:
    return characters.info(caller.id, name).to_json()


@router.patch("/characters/{name}")
def patch_character(caller: Caller, characters: Store, name: str, patch: CharacterPatch) -> dict:
    changes = patch.model_dump(exclude_unset=True)
    new_name = changes.pop("name", None)
    return characters.update(caller.id, name, new_name=new_name, **changes).to_json()


@router.delete("/characters/{name}")
def delete_character(caller: Caller, characters: Store, name: str) -> dict:
    info = characters.delete(caller.id, name)
    return {"object": "character", "name": info.name, "deleted": True}
