"""Step-level continuous batching for the UNet families (SD 1.5, SDXL): requests join a running batch between
two denoising steps and leave when their own steps are done.

The pieces:

- `rows.Row`: one request (all its images) with everything its own pipeline call would hold: its latents (drawn
  with its per-image generators, scaled by its scheduler's `init_noise_sigma`), its OWN diffusers scheduler
  (set to its own step count; multistep solvers such as DPM++ 2M keep past model outputs, so an instance is never
  shared), its step index, its prompt embeddings (negatives then positives under CFG, as its own call orders
  them), its CFG scale, the `scheduler.step` kwargs (the generators of ancestral samplers) and its RunControl.
- `loop.run_stream`: each iteration asks the caller for newcomers (`admit()`), starts them, concatenates the
  active rows' model inputs, calls the UNet ONCE with a per-row timestep tensor and the concatenated embeddings,
  splits the noise predictions back, and lets each row apply its CFG and its scheduler step. Then, per row:
  cancel (it leaves, `finish(item, JobCancelled)`), interrupt/skip (it leaves now, its partial latents decoded,
  as a lone run does), previews and progress, and a row whose steps are done is decoded and handed back at once
  (`finish(item, EngineResult)`), while the others go on.

Bit identity: on the CPU in float32 (`Engine.batches_identically`) the UNet call runs under
`engine.batching.split_batch` with one group per image (its negative and positive rows), and the VAE decode of a
row with several images under one group per image: the batch-size dependent kernels then see exactly the rows of
the request's own call, so every image equals the request run alone, bit for bit (tests/engine/test_continuous.py).
Per-row timesteps change nothing there: the UNet expands a lone call's scalar timestep to one per row anyway.
Elsewhere (CUDA) the call runs unsplit and rows may differ from lone runs as much as diffusers' own batches do.

What cannot differ inside one denoiser call is the caller's compatibility key (service.batching.stream_key):
model, size, avatars (LoRA / embedding weights live on the shared UNet and text encoders), clip skip, tiling. The
prompt-embedding length cannot be known before encoding: rows of another length wait here, inside the loop, and
start when the running ones are done. Covered: txt2img with the samplers in `STEPPED_SAMPLERS`, no hires fix, no
variation seed, no IP-Adapter / ControlNet avatars, no LCM-distilled UNet; anything else given to
`generate_stream` runs through today's whole-batch merging (`Engine.generate_batch`), grouped by the fields it
needs equal (the T5 families, SD3 and FLUX.1, always go that way for now).
"""

from __future__ import annotations

from pictale.engine.stepping.loop import generate_stream, run_stream
from pictale.engine.stepping.rows import STEPPED_SAMPLERS, can_step

__all__ = ["STEPPED_SAMPLERS", "can_step", "generate_stream", "run_stream"]
