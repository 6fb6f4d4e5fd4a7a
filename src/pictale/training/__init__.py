"""LoRA training from photos: a job that turns 20-40 photos into a LoRA avatar (`shared/reference/training.md`).

- `spec`: what a training is (`TrainingSpec`, the kind presets' defaults, `PreparedPhoto`); pure Python.
- `photos/`: checks before any compute (unreadable, too few, too small, near-duplicates, blurry: one 4xx listing
  each file), EXIF orientation, face crops, aspect buckets and captions; no torch.
- `captioner`: model captions from `models/captioner/` (BLIP-style, offline) for the photos without a `.txt`; run
  on the worker after `photos.prepare` (it needs torch).
- `loop`: the peft LoRA loop on a base pipeline loaded by `engine.models` (SD 1.5/SDXL epsilon or v with
  min-SNR, FLUX.1 dev flow matching), cached latents and text embeddings, state saved every N steps and resumed.
- `presets`: the kind presets and the 8/12/16/24 GB memory presets (`preset_defaults`, `presets_table`).
- `objectives`, `lora_setup`, `state`: the loss per family, the peft layers and optimiser, the resume files and
  `checkpoint-<step>/` folders.
- `scoring`: samples with fixed seeds and prompts, scored for likeness (CLIP-I to the photos) and prompt adherence
  (CLIP-T); the best checkpoint and why.
- `face_likeness`: dlib's 128-d face descriptor (the optional `faces` extra): for face and character trainings the
  face similarity to the photos is the likeness.
- `export`: the kohya `.safetensors` (A1111/ComfyUI/Forge load it) with `ss_*` metadata and pictale's own.

The service runs a training on the worker in chunks of steps, so generation requests are served between them.
"""
