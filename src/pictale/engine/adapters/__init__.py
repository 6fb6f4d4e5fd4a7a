"""Avatars applied to a loaded pipeline per job.

- `avatars`: `AvatarAdapters`, the per-job state of LoRA, embeddings, IP-Adapter and ControlNet on a pipeline;
- `unet_ip`: face/style IP-Adapter slots of the UNet families (SD 1.5, SDXL; h94 layout);
- `pose`: the OpenPose detector that turns a photo into a pose avatar's skeleton.

The transformer families keep their adapter code beside their generation code (`families.sd3`, `families.flux`).
"""

from pictale.engine.adapters.avatars import AvatarAdapters, JobAdapters, canonical, lora_adapter_name

__all__ = ["AvatarAdapters", "JobAdapters", "canonical", "lora_adapter_name"]
