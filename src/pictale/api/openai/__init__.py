"""The OpenAI images dialect (`/v1/images/generations`, `/v1/images/edits`, `/v1/models`).

Where OpenAI's API does not fit diffusion models, pictale decides:

- `n` is the number of images (1..`--max-batch-images`); `seed` is its own field (-1 or absent: random,
  image i gets seed+i). Extensions: `negative_prompt` (or Block Entropy's `negprompt`), `seed`, `steps`,
  `guidance` (also `guidance_scale`, `cfg_scale`, `cfg`), `sampler` (A1111 names such as "DPM++ 2M Karras"),
  `scheduler`, `clip_skip`; edits add `strength` and `mask_blur`. What the client leaves unset comes from the
  model's profile (service/profiles.py): DPM++ 2M, 20 steps, CFG 7, or a few-step model's own defaults, or a
  FLUX.1 model's (Euler, CFG 1, schnell 4 steps, dev and Kontext 28 with their distilled guidance 3.5 / 2.5).
  `quality`, `style`, `user` and `background` are accepted and ignored (streams echo quality and background).
- `model`: a known checkpoint (model name as `/v1/models` lists it, A1111 title or file name) is used for
  that request only; any other name ("dall-e-3", "gpt-image-1", empty) uses the loaded model.
- `size`: "WxH" of any size up to `--max-width`/`--max-height` (400 above), floored to multiples of 8 (16 on
  FLUX.1, as Forge does; the stream's `size` says what ran); "auto" or absent: for generations the model family's
  native square (512 for SD 1.5, 1024 for SDXL, SD3 and FLUX.1; a few-step profile's own size, e.g. 512 for
  SDXL Turbo), for edits the first image's size (scaled to fit).
- `/v1/models`: OpenAI's model objects plus pictale's `family`, `variant` and `license` (FLUX.1: schnell
  Apache-2.0, dev and Kontext the FLUX.1 [dev] Non-Commercial License) and `profile` (the model's defaults).
- `response_format`: `url` (default; links to `/v1/files/{token}`, expire after `--file-ttl-minutes`) or
  `b64_json`; absent with a `gpt-image*` model means `b64_json`, as OpenAI answers for those models.
  `output_format` png/jpeg/webp re-encodes (`output_compression` is the JPEG/WEBP quality).
- `revised_prompt` is sent only when the prompt had avatar, LoRA or character tokens: the words the model read
  (characters expanded, avatar and LoRA tokens removed).
- Edits: each image is edited `n` times; output i comes from image i mod k (k images, n x k outputs).
  A masked edit of several images runs as one job per image (image j's outputs get seeds seed + j*n ...).
  The mask, when its PNG has an alpha channel, follows OpenAI: fully transparent (alpha 0) = edit; a mask
  without alpha (grey/RGB, as A1111 clients draw) uses white = edit. Without a mask, the first image's own
  transparency is the mask when it has transparent pixels. The mask applies to every image and must have the
  first image's dimensions. Masked edits default to strength 1.0 (the area is replaced), mask blur 0 (opaque
  pixels come back exactly as sent) and the whole picture as context; unmasked edits are img2img at 0.75.
- Block Entropy mode (`--compat blockentropy`, or a model id starting with "be-"): `n` is the seed (one image;
  an explicit `seed` wins), absent `size` is 1024x1024. Its bugs are not copied: `data` is always a list, and
  a missing `n` means a random seed, not 42.
- `stream: true` with `partial_images` 0-3: server-sent `image_generation.partial_image` (or `image_edit.*`)
  events built from the job's live previews, then one `...completed` event per image.
"""
