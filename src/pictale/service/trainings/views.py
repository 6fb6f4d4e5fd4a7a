"""The training object of `/v1/trainings` (and of its job's `done` event), built from the stored row."""

from __future__ import annotations

from typing import Any

SETTINGS = ("rank", "alpha", "steps", "learning_rate", "optimizer", "resolution", "batch_size", "seed",
            "class_word", "sample_prompts", "checkpoint_every", "sample_every")  # fmt: skip
LORA_WEIGHT = 0.8


def training_view(training: dict, base_url: str = "", live: dict | None = None) -> dict[str, Any]:
    """`live`: what a running training knows that the row has not saved yet (step, loss, eta)."""
    doc = {**training["document"], **(live or {})}
    spec = training["request"]["spec"]
    tid = training["id"]
    root = f"{base_url.rstrip('/')}/v1/trainings/{tid}"
    state = training["state"]
    avatar = doc.get("avatar")
    return {
        "id": tid,
        "object": "training",
        "name": spec["name"],
        "trigger": spec["trigger"],
        "kind": spec["kind"],
        "base_model": training["request"].get("base_model_title") or spec["base_model"],
        "family": spec["family"],
        "state": state,
        # queued, then the runner's stages while it runs; done, failed or cancelled once it has ended
        "stage": doc.get("stage", "queued") if state in ("queued", "running") else state,
        "step": doc.get("step", 0),
        "total": doc.get("total") or spec["steps"],
        "loss": doc.get("loss"),
        "losses": doc.get("losses") or [],
        "eta": doc.get("eta") if state == "running" else None,
        "photos": len(doc.get("photos", [])),
        "settings": {k: spec.get(k) for k in SETTINGS},
        "samples": [sample_json(s, root) for s in doc.get("samples", [])],
        "checkpoints": [c["step"] for c in doc.get("checkpoints", [])],
        "chosen": doc.get("chosen"),
        "avatar": avatar,
        "prompt": f"<be-lora:{avatar}:{LORA_WEIGHT}> {spec['trigger']}" if avatar else None,
        "character": doc.get("character"),
        "character_error": doc.get("character_error"),
        "error": {"message": training["error"], "code": doc.get("error_code")} if training.get("error") else None,
        "created": training["created"],
        "updated": training["updated"],
        "events": f"{root}/events",
    }


def sample_json(sample: dict, root: str) -> dict[str, Any]:
    step = sample["step"]
    images = [f"{root}/samples/{step}/{i}" for i in range(len(sample["images"]))]
    return {"step": step, "images": images, "scores": sample.get("scores") or {}, "prompts": sample.get("prompts", [])}
