"""`POST /v1/avatars/{kind}/{name}/sweep`: one prompt and seed at several avatar weights, as a job.

Answers 202 with the job object (`GET /v1/jobs/{id}`, `/events`, `DELETE` as for any job); its result is the
`avatar.sweep` object of `story.sweep`. Everything it could be refused for is checked before it is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pictale.api.auth import require_auth
from pictale.api.deps import service
from pictale.api.native.job_schemas import JobRequest
from pictale.api.native.job_views import job_json
from pictale.core.limits import GUIDANCE_MAX, Seed
from pictale.core.samplers import check_sampler_name
from pictale.core.types import GenerationSpec, Principal
from pictale.service.generation import GenerationService
from pictale.service.profiles import profile_of_request
from pictale.story.sweep import SweepRunner

router = APIRouter(prefix="/v1", tags=["avatars"])
Caller = Annotated[Principal, Depends(require_auth)]

WEIGHT_MIN, WEIGHT_MAX = 0.0, 2.0


class SweepRequest(BaseModel):
    """A weight sweep; unset generation fields come from the model's profile (as on `POST /v1/jobs`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    prompt: str = Field(min_length=1, max_length=10000)
    """May call other avatars; the swept avatar's token is put in front of it at each weight."""
    negative_prompt: str = ""
    seed: Seed = -1
    """-1: one random seed, the same for every weight."""
    weights: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=2, max_length=11)
    steps: int | None = Field(None, ge=1)
    width: int | None = None
    height: int | None = None
    cfg_scale: float | None = Field(None, ge=0.0, le=GUIDANCE_MAX)
    sampler_name: str | None = None
    model: str | None = None

    @field_validator("weights")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        bad = [w for w in v if not WEIGHT_MIN <= w <= WEIGHT_MAX]
        if bad:
            raise ValueError(f"each weight must be from {WEIGHT_MIN:g} to {WEIGHT_MAX:g} (got {bad[0]:g})")
        return v

    @field_validator("sampler_name", "model")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    def to_spec(self, svc: GenerationService) -> GenerationSpec:
        """The sweep's generation without the avatar token; unset fields from the model's profile."""
        check_sampler_name(self.sampler_name, "sampler_name")
        profile, entry = profile_of_request(svc, self.model)
        job = JobRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            width=self.width,
            height=self.height,
            sampler=self.sampler_name,
            model=self.model,
        )
        family = entry.family if entry else None
        return job.to_spec(profile, family=family, options=svc.options, max_pixels=svc.settings.max_image_pixels)


def _sweeps(request: Request) -> SweepRunner:
    return request.app.state.sweeps


@router.post("/avatars/{kind}/{name}/sweep", status_code=202)
def start_sweep(request: Request, caller: Caller, kind: str, name: str, body: SweepRequest) -> JSONResponse:
    """Queue the sweep and answer with its job (kind "sweep"); `point` events follow each finished weight."""
    runner = _sweeps(request)
    plan = runner.plan(caller.id, kind, name, body.to_spec(service(request)), body.weights)
    job = runner.start(plan)
    view: dict[str, Any] = job_json(job, request.app.state.files, str(request.base_url))
    return JSONResponse(view, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
