"""Settings: one pydantic-settings object, filled from CLI flags and PICTALE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("pictale", appauthor=False))


class Settings(BaseSettings):
    """Everything configurable. Paths default to folders under `data_dir`."""

    model_config = SettingsConfigDict(env_prefix="PICTALE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    models_dir: Path | None = None
    outputs_dir: Path | None = None
    database_url: str | None = None

    model: str | None = None
    """Checkpoint to load at start: a path, a hub id, a name from the models dir, or "tiny"."""

    listen: bool = False
    host: str | None = None
    port: int = 7860
    api_auth: str | None = None
    """`user:pass[,user2:pass2]`: HTTP Basic on every route."""
    cors_allow_origins: str | None = None
    cors_allow_origins_regex: str | None = None

    device: str = "auto"
    dtype: str = "auto"
    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 150
    max_batch_images: int = 16
    max_image_pixels: int = 4096 * 4096
    """Largest image (width x height) any route decodes: init images, masks, edits, png-info, avatar uploads."""
    max_prompt_chars: int = 10000
    """Longest prompt or negative prompt, in characters (longer ones get a 422 naming the field and this limit)."""
    queue_size: int = 16
    max_lora_mb: int = 175
    """Largest LoRA/embedding upload accepted, in MB."""
    max_upload_images: int = 16
    ip_adapter_dir: Path | None = None
    """IP-Adapter weights in the h94/IP-Adapter layout (default MODELS_DIR/IP-Adapter)."""
    controlnet_dir: Path | None = None
    """ControlNet folders per family: openpose-sd15/, openpose-sdxl/ (default MODELS_DIR/ControlNet)."""
    openpose_dir: Path | None = None
    """OpenPose detector weights that turn a photo into a skeleton (default MODELS_DIR/Annotators)."""
    preview_every: int = 5
    """Send a cheap latent preview every N sampling steps to those listening (0: never)."""
    batch_max: int = 8
    """Most images the worker runs as one batch when queued requests can share it."""
    continuous_batching: bool = True
    """Euler, Euler a and DPM++ 2M txt2img requests on SD 1.5/SDXL (and those that run flow Euler on SD3 and FLUX.1)
    join a running batch between denoising steps and leave when their own steps are done (engine.stepping); off:
    they merge whole runs like the other samplers."""
    deterministic: bool = False
    """Where merged rows are not bit-identical to lone runs (CUDA, half precision: up to the 1/255 diffusers' own
    batches differ by), run every request alone. On the CPU in float32 merged rows are identical anyway."""
    compat: str | None = None
    """"blockentropy": accept that service's quirks on the OpenAI routes (n is the seed, ...)."""
    job_retention_minutes: int = 60
    """Finished jobs stay readable (GET /v1/jobs/{id}, events) this long..."""
    jobs_kept: int = 256
    """...and at most this many of them (the newest), so a busy server's memory stays bounded."""
    file_ttl_minutes: int = 60
    """How long `url` responses stay fetchable."""
    callback_timeout: float = 10.0
    callback_retries: int = 3
    callback_allow_private: bool = False
    """Let webhooks go to loopback, private and link-local addresses (a receiver on this machine or LAN);
    off by default: on a shared server that would let clients make the server call its own network."""
    model_kind: str | None = None
    """Declare the loaded model few-step: "lcm", "turbo", "lightning" or "hyper" (else detected from its name)."""
    save_images: bool = False
    offline: bool = False
    log_level: str = "info"
    """debug, info, warning or error: pictale's own log lines; debug adds the libraries' logs and progress bars."""

    # -- gallery -----------------------------------------------------------------------------------
    gallery: bool = True
    """Keep every image a key generates (A1111, OpenAI, /v1/jobs, imagine; not book candidates) in
    DATA_DIR/gallery, browsable by that key at /v1/gallery."""
    gallery_days: float = 30
    """Gallery images older than this many days are deleted (0: kept forever)."""
    gallery_max_images: int = 10000
    """Most gallery images kept per key; the oldest go first (0: no limit)."""

    # -- T5 family (SD3) ---------------------------------------------------------------------------
    t5_max_tokens: int = 256
    """T5 prompt limit of SD3-family models: 256 by default, up to 512 (longer prompts are cut there)."""

    # -- FLUX.1 single files ------------------------------------------------------------------------
    flux_t5_file: Annotated[list[str], NoDecode] = ["t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn.safetensors"]
    """T5-XXL file(s) a Flux transformer file is loaded with, first found wins: names looked up in
    MODELS_DIR/text_encoder, text_encoders/ and clip/ (and beside the file), or paths; comma-separated in env/CLI."""
    flux_clip_file: Annotated[list[str], NoDecode] = ["clip_l.safetensors"]
    """CLIP-L file(s) for Flux transformer files, looked up like flux_t5_file."""
    flux_vae_file: Annotated[list[str], NoDecode] = ["ae.safetensors"]
    """Flux VAE file(s), looked up in MODELS_DIR/VAE and vae/ (and beside the file), or paths."""
    flux_memory: str = "auto"
    """How a Flux model is held: auto (from free VRAM), full, offload, fp8, sequential (see families/flux/memory.py)."""

    # -- speed and memory (engine/speed/) ---------------------------------------------------------
    compile: bool = False
    """torch.compile the denoiser (SD 1.5/SDXL UNet) and the VAE decoder at load, warmed up at `compile_sizes`."""
    compile_sizes: str | None = None
    """WIDTHxHEIGHT[,WxH...] compiled at start-up (default: the model's default size); other sizes compile on use."""
    compile_lora_rank: int = 64
    """Compiled mode: the largest LoRA rank an avatar may have (LoRAs are hot-swapped into slots of this rank)."""
    compile_lora_slots: int = 2
    """Compiled mode: LoRA avatars one image may use at once (each slot costs a little on every step)."""
    compile_backend: str = "inductor"
    """torch.compile backend (inductor; aot_eager and eager only check the wiring)."""
    low_vram: bool = False
    """6-8 GB cards (SD 1.5/SDXL): model CPU offload (CUDA) and VAE tiling and slicing."""
    png_compress_level: int = 1
    """zlib level of PNG responses, 0-9 (1: fast, a little larger; Pillow's default is 6)."""

    # -- stories ------------------------------------------------------------------------------------
    llm_base_url: str | None = None
    """An OpenAI-compatible chat endpoint that writes scene prompts and stories (LM Studio, Ollama, llama.cpp,
    vLLM), e.g. http://127.0.0.1:11434/v1; unset: a deterministic keyword extractor writes the prompts."""
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout: float = 60.0
    clip_model: str | None = None
    """CLIP model that scores book pages (local path or hub id; default MODELS_DIR/CLIP, "tiny" for tests)."""
    # Ray Serve (`pictale serve --ray`, `pictale.cluster`): one ingress replica holds the queue and the jobs; the
    # generation work runs on `ray_replicas` worker replicas.
    ray_address: str | None = None
    """Set by `--ray [ADDRESS]`: "local" starts a Ray on this machine; else a cluster address ("auto", host:port)."""
    ray_replicas: int = 1
    """Worker replicas (fixed); with ray_max_replicas above ray_min_replicas, Serve autoscales between them."""
    ray_min_replicas: int | None = None
    ray_max_replicas: int | None = None
    ray_gpus_per_replica: float | None = None
    """GPUs per worker replica; unset: 1 when the Ray cluster has GPUs, else 0 (CPU replicas)."""
    ray_cpus_per_replica: float = 1.0
    ray_ingress_cpus: float = 0.5
    ray_max_ongoing: int = 1
    """Jobs one worker replica takes at once (a GPU runs one; more would only queue inside it)."""
    ray_avatar_sets_per_replica: int = 8
    """Model + avatar sets a replica keeps routed to itself (Serve model multiplexing, least recently used go)."""
    ray_retries: int = 1
    """Times a job whose replica died is run again on another replica (same seeds: the same images)."""
    ray_threads_per_replica: int | None = None
    """torch threads in each worker replica (unset: Ray's default, the replica's CPUs)."""

    @field_validator(
        "max_prompt_chars", "max_image_pixels", "max_width", "max_height", "queue_size", "ray_replicas",
        "ray_max_ongoing", "ray_avatar_sets_per_replica", "ray_min_replicas", "ray_max_replicas",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1")
        return v

    @model_validator(mode="after")
    def _replica_bounds(self) -> Settings:
        lo, hi = self.ray_min_replicas, self.ray_max_replicas
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"ray_min_replicas ({lo}) is above ray_max_replicas ({hi})")
        return self

    @field_validator("gallery_days", "gallery_max_images")
    @classmethod
    def _not_negative(cls, v: float) -> float:
        if not v >= 0:  # NaN too
            raise ValueError("must be 0 (no limit) or more")
        return v

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("port must be between 0 and 65535")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log level must be one of debug, info, warning, error")
        return v.lower()

    @field_validator("t5_max_tokens")
    @classmethod
    def _t5_range(cls, v: int) -> int:
        if not 1 <= v <= 512:
            raise ValueError("t5_max_tokens must be between 1 and 512 (SD3's T5 takes at most 512 tokens)")
        return v

    @field_validator("flux_t5_file", "flux_clip_file", "flux_vae_file", mode="before")
    @classmethod
    def _file_list(cls, v: object) -> object:
        if isinstance(v, str):
            v = [part.strip() for part in v.split(",")]
        if isinstance(v, list | tuple) and not [part for part in v if str(part).strip()]:
            raise ValueError("name at least one file")
        return [str(part).strip() for part in v if str(part).strip()] if isinstance(v, list | tuple) else v

    @field_validator("flux_memory")
    @classmethod
    def _flux_memory(cls, v: str) -> str:
        modes = ("auto", "full", "offload", "fp8", "sequential")  # engine.families.flux.memory.MEMORY_MODES
        if v.strip().lower() not in modes:
            raise ValueError(f"flux_memory must be one of {', '.join(modes)}")
        return v.strip().lower()

    @field_validator("compile_sizes")
    @classmethod
    def _compile_sizes(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from pictale.core.sizes import parse_sizes

        parse_sizes(v)  # raises ValueError naming the bad entry
        return v.strip()

    @field_validator("compile_lora_rank", "compile_lora_slots", "png_compress_level")
    @classmethod
    def _speed_ranges(cls, v: int, info) -> int:
        low, high = {"compile_lora_rank": (1, 1024), "compile_lora_slots": (0, 8)}.get(info.field_name, (0, 9))
        if not low <= v <= high:
            raise ValueError(f"{info.field_name} must be between {low} and {high}")
        return v

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def checkpoints_path(self) -> Path:
        """Where checkpoints are scanned, like A1111's `models/Stable-diffusion`."""
        return self.models_path / "Stable-diffusion"

    @property
    def loras_path(self) -> Path:
        return self.models_path / "Lora"

    @property
    def ip_adapter_path(self) -> Path:
        return self.ip_adapter_dir or self.models_path / "IP-Adapter"

    @property
    def controlnet_path(self) -> Path:
        return self.controlnet_dir or self.models_path / "ControlNet"

    @property
    def openpose_path(self) -> Path:
        return self.openpose_dir or self.models_path / "Annotators"

    @property
    def demo_path(self) -> Path:
        """The tiny demo model and its own adapters, apart from the user's model folders (never scanned)."""
        return self.data_dir / "demo"

    @property
    def clip_path(self) -> Path:
        return self.models_path / "CLIP"

    @property
    def blobs_path(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def files_path(self) -> Path:
        return self.data_dir / "files"

    @property
    def gallery_path(self) -> Path:
        return self.data_dir / "gallery"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pictale.db'}"

    @property
    def outputs_path(self) -> Path:
        return self.outputs_dir or self.data_dir / "outputs"

    @property
    def bind_host(self) -> str:
        if self.host:
            return self.host
        return "0.0.0.0" if self.listen else "127.0.0.1"

    def auth_pairs(self) -> dict[str, str]:
        """Parse `--api-auth` into {user: password}."""
        pairs: dict[str, str] = {}
        if not self.api_auth:
            return pairs
        for item in self.api_auth.split(","):
            item = item.strip()
            if not item:
                continue
            user, sep, password = item.partition(":")
            if not sep:
                raise ValueError(f"--api-auth entry {item!r} must be user:password")
            pairs[user] = password
        return pairs
