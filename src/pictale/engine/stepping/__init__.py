"""Step-level continuous batching for SD 1.5, SDXL, SD3 and FLUX.1 (schnell, dev): requests join a running batch
between two denoising steps and leave when their own steps are done.

The pieces:

- `rows.Row`: one request (all its images) with everything its own pipeline call would hold: its latents (drawn
  with its per-image generators, scaled by its scheduler's `init_noise_sigma`), its OWN diffusers scheduler
  (set to its own step count; multistep solvers such as DPM++ 2M keep past model outputs, so an instance is never
  shared), its step index, its prompt embeddings (negatives then positives under CFG, as its own call orders
  them), its CFG scale, the `scheduler.step` kwargs (the generators of ancestral samplers) and its RunControl.
- `flow.SD3Row`, `flow.FluxRow`: the same for the flow-matching families (flow Euler: A1111 "Euler" and the names
  that map to it), prepared by the family's own code (cached T5/CLIP embeddings, T5 limit, latents, infotext
  notes): SD3 with true CFG as doubled rows and its own shift; FLUX.1 with packed latents, shared image and text
  ids, dev's distilled guidance per row, true CFG (CFG scale > 1) as negative rows of the same call, and
  `calculate_shift` of the image sequence length as `mu`. The row kind makes the call (`step_all`) and decodes.
- `loop.run_stream`: each iteration asks the caller for newcomers (`admit()`), starts them, concatenates the
  active rows' model inputs, calls the UNet (or transformer) ONCE with a per-row timestep tensor and the
  concatenated embeddings, splits the noise predictions back, and lets each row apply its CFG and its scheduler
  step. Then, per row: cancel (it leaves, `finish(item, JobCancelled)`), interrupt/skip (it leaves now, its
  partial latents decoded, as a lone run does), previews and progress, and a row whose steps are done is decoded
  and handed back at once (`finish(item, EngineResult)`), while the others go on.

Bit identity: on the CPU in float32 (`Engine.batches_identically`) the UNet call runs under
`engine.batching.split_batch` with one group per image (its negative and positive rows), and the VAE decode of a
row with several images under one group per image: the batch-size dependent kernels then see exactly the rows of
the request's own call, so every image equals the request run alone, bit for bit (tests/engine/test_continuous.py).
FLUX.1 splits as its lone calls do (every transformer row and every decoded image alone); SD3's lone call runs
its images unsplit, so an SD3 request is one group and decodes its images together (test_continuous_flow.py).
Per-row timesteps change nothing there: the UNet expands a lone call's scalar timestep to one per row anyway.
Elsewhere (CUDA) the call runs unsplit and rows may differ from lone runs as much as diffusers' own batches do.

What cannot differ inside one denoiser call is the caller's compatibility key (service.batching.stream_key):
model, size, avatars (LoRA / embedding weights live on the shared UNet and text encoders), clip skip, tiling, the
T5 length setting. The prompt-embedding length (on the T5 families: the T5 limit, raised for a long prompt)
cannot be known before encoding: rows of another length wait here, inside the loop, and start when the running
ones are done. Covered: txt2img with the samplers in `STEPPED_SAMPLERS` (SD3 / FLUX.1: those that run flow
Euler there), no hires fix, no variation seed, no IP-Adapter / ControlNet avatars, no LCM-distilled UNet, no
Kontext. Anything else given to `generate_stream` runs through today's whole-batch merging
(`Engine.generate_batch`), grouped by the fields it needs equal; such a newcomer of a running loop (DPM++ 2M on
SD3, where it is a flow DPM solver) waits until the loop is done.
"""

from __future__ import annotations

from pictale.engine.stepping.loop import generate_stream, run_stream
from pictale.engine.stepping.rows import STEPPED_SAMPLERS, can_step

__all__ = ["STEPPED_SAMPLERS", "can_step", "generate_stream", "run_stream"]
