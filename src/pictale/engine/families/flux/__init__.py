"""FLUX.1 (schnell, dev, Kontext): loading from folders and single files, generation, LoRA, IP-Adapter, ControlNet.

- `generate`: txt2img, img2img, inpaint, hires fix and Kontext reference editing on a loaded Flux pipeline;
- `loading`: single-file transformers (safetensors, GGUF, fp8) with separate T5, CLIP-L and VAE files;
- `ip_adapter`: face and style avatars through the XLabs Flux IP-Adapter;
- `controlnet`: pose avatars through a Flux union ControlNet.

Facts: `shared/reference/flux.md`.
"""
