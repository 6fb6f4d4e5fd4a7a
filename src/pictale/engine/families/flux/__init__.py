"""FLUX.1 (schnell, dev, Kontext): loading from folders and single files, generation, LoRA, IP-Adapter, ControlNet.

- `generate`: txt2img, img2img, inpaint, hires fix and Kontext reference editing on a loaded Flux pipeline;
- `files`: Flux transformer files told by their tensor names, and their T5, CLIP-L and VAE companions (no torch);
- `loading`: single-file transformers (safetensors, GGUF, fp8, all-in-one) assembled into a pipeline;
- `memory`: full, model offload, fp8 storage or sequential offload, chosen from free VRAM;
- `ip_adapter`: face and style avatars through the XLabs Flux IP-Adapter;
- `controlnet`: pose avatars through a Flux union ControlNet.

Facts: `shared/reference/flux.md`.
"""
