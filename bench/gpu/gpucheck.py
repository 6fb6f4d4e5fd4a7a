# ruff: noqa: E501
"""pictale GPU check: random-weight SD 1.5, SDXL and FLUX.1 [dev] with the real architectures; direct diffusers against
pictale's A1111 route (latency, throughput, memory, bit identity). Nothing is downloaded.

run.sh drives it; each subcommand is one time-boxed phase writing WORK/results/<phase>.json as it goes
(a phase killed at its time box leaves what it had measured):

    gpucheck.py versions                 versions, import check of everything pictale imports
    gpucheck.py archcheck                full-size configs built on the meta device: parameter counts vs real
    gpucheck.py build sd15|sdxl          random weights, fp16 on cuda (fp32 on cpu), saved as a diffusers folder
    gpucheck.py direct sd15|sdxl         diffusers pipeline from that folder: latency, batch throughput, identity
    gpucheck.py server sd15|sdxl [--forced]   `python -m pictale serve` on it, same requests over HTTP
    gpucheck.py build|direct|server flux FLUX.1 [dev], bf16, with memory modes (flux_gpu.py)
    gpucheck.py train sd15|sdxl          LoRA training with LoraTrainer per GPU memory preset (train_gpu.py)
    gpucheck.py speed sd15|sdxl compile|lowvram   `pictale serve --compile` / `--low-vram` rows (speed_gpu.py)
    gpucheck.py forced-serve -- serve ...     pictale's CLI with merged batches allowed on any device (a patch)
    gpucheck.py summary                  OUT/results.json, OUT/summary.txt, OUT/servers.log

Environment: DEVICE (cuda | cpu), SMALL=1 (shrunken layer sizes and small images, for a CPU dry run), WORK,
OUT, and SD15_SIZE SDXL_SIZE STEPS CFG N WARM BATCH BATCH_REPS CLIENTS PER_CLIENT SOLO_CHECK.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

DEVICE = os.environ.get("DEVICE", "cuda")
SMALL = os.environ.get("SMALL", "0") == "1"
WORK = Path(os.environ.get("WORK", "/tmp/gpu-work"))
OUT = Path(os.environ.get("OUT") or "/tmp/gpu-out")
RESULTS = WORK / "results"
MODELS = WORK / "models"


def _int(name: str, full: int, small: int) -> int:
    return int(os.environ.get(name) or (small if SMALL else full))


SIZE = {"sd15": _int("SD15_SIZE", 512, 64), "sdxl": _int("SDXL_SIZE", 1024, 64)}
STEPS = _int("STEPS", 20, 4)
CFG = float(os.environ.get("CFG") or 7.0)
N = _int("N", 5, 3)
WARM = _int("WARM", 2, 1)
BATCH = _int("BATCH", 8, 8)
BATCH_REPS = _int("BATCH_REPS", 3, 2)
CLIENTS = _int("CLIENTS", 8, 8)
PER_CLIENT = _int("PER_CLIENT", 3, 3)
SOLO_CHECK = _int("SOLO_CHECK", 8, 2)
SEED = 1
CONC_SEED0 = 1000
PROMPT = "a photo of a cat sitting on a wooden chair, soft window light"
PROMPTS = [
    "a photo of a cat sitting on a wooden chair, soft window light",
    "a dog running in a park, golden hour",
    "a red chair in an empty white room",
    "a lone tree on a green hill under clouds",
    "an old man with a hat reading a newspaper",
    "a castle at sunset above a calm lake",
    "a blue car on a mountain road",
    "a bowl of fruit on a kitchen table",
]
# Parameter counts of the real checkpoints' components (diffusers / transformers classes).
REAL_PARAMS = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


def log(*parts) -> None:
    print("[gpucheck]", *parts, flush=True)


def cuda() -> bool:
    return DEVICE.startswith("cuda")


def model_dir(family: str) -> Path:
    return MODELS / f"{family}-rand"


class Phase:
    """A phase's results, rewritten to WORK/results/<name>.json after every update."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict = {"phase": name, "done": False}
        self.t0 = time.perf_counter()
        self.save()

    def set(self, **kw) -> None:
        self.data.update(kw)
        self.save()

    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        tmp = RESULTS / f".{self.name}.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, RESULTS / f"{self.name}.json")


def run_phase(name: str, fn, *args) -> int:
    ph = Phase(name)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # time box: unwind, so servers get stopped
    try:
        fn(ph, *args)
        ph.set(done=True)
        return 0
    except BaseException as exc:
        ph.set(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
        log(f"{name} FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1


def median(xs):
    return statistics.median(xs) if xs else None


def pct(xs, q):
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def r4(x):
    return None if x is None else round(float(x), 4)


# ---------------------------------------------------------------------------------------------- GPU memory


class GpuMem:
    """nvidia-smi memory.used (MiB, whole GPU) sampled in the background; inert without nvidia-smi."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = None
        self.available = cuda() and _which("nvidia-smi")

    def read(self) -> int | None:
        if not self.available:
            return None
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return int(out.strip().splitlines()[0])
        except Exception:
            return None

    def start(self) -> GpuMem:
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self.read()
            if v is not None:
                self.samples.append(v)
            self._stop.wait(self.every)

    def peak(self) -> int | None:
        return max(self.samples) if self.samples else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def per_process_mib(pid: int) -> int | None:
    if not (cuda() and _which("nvidia-smi")):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        for line in out.splitlines():
            p, _, mib = line.partition(",")
            if p.strip() == str(pid):
                return int(mib.strip())
    except Exception:
        pass
    return None


def _which(name: str) -> bool:
    from shutil import which

    return which(name) is not None


def torch_mem(torch) -> dict:
    if not cuda():
        return {}
    return {
        "max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
    }


# ---------------------------------------------------------------------------------------------- images


def to_uint8(img):
    import numpy as np

    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def b64_png_to_uint8(data: str):
    from PIL import Image

    return to_uint8(Image.open(io.BytesIO(base64.b64decode(data))))


def diff(a, b) -> dict:
    import numpy as np

    if a.shape != b.shape:
        return {"shape_mismatch": [list(a.shape), list(b.shape)]}
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {
        "max_abs": int(d.max()),
        "mean_abs": round(float(d.mean()), 4),
        "frac_diff": round(float((d > 0).mean()), 5),
    }


def identity_summary(diffs: list[dict]) -> dict:
    ok = [d for d in diffs if "max_abs" in d]
    return {
        "compared": len(diffs),
        "identical": sum(1 for d in ok if d["max_abs"] == 0),
        "max_abs": max((d["max_abs"] for d in ok), default=None),
        "mean_abs_max": max((d["mean_abs"] for d in ok), default=None),
        "frac_diff_max": max((d["frac_diff"] for d in ok), default=None),
    }


# ---------------------------------------------------------------------------------------------- versions


MODULES = [
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("huggingface_hub", "huggingface_hub"),
    ("tokenizers", "tokenizers"),
    ("safetensors", "safetensors"),
    ("accelerate", "accelerate"),
    ("peft", "peft"),
    ("kernels", "kernels"),
    ("regex", "regex"),
    ("fastapi", "fastapi"),
    ("starlette", "starlette"),
    ("uvicorn", "uvicorn"),
    ("pydantic", "pydantic"),
    ("pydantic_core", "pydantic_core"),
    ("pydantic_settings", "pydantic_settings"),
    ("multipart", "python-multipart"),
    ("sqlalchemy", "SQLAlchemy"),
    ("alembic", "alembic"),
    ("mako", "Mako"),
    ("tenacity", "tenacity"),
    ("platformdirs", "platformdirs"),
    ("torchsde", "torchsde"),
    ("fpdf", "fpdf2"),
    ("openai", "openai"),
    ("jiter", "jiter"),
    ("httpx", "httpx"),
    ("httpx2", "httpx2"),
    ("typer", "typer"),
    ("click", "click"),
    ("anyio", "anyio"),
    ("typing_extensions", "typing_extensions"),
    ("numpy", "numpy"),
    ("PIL", "pillow"),
    ("scipy", "scipy"),
    ("sentencepiece", "sentencepiece"),
    ("pictale", "pictale"),
]
# Every pictale module that pulls in a third-party package (the server imports most of them at start).
PICTALE_MODULES = [
    "pictale.engine.models",
    "pictale.cli.main",
    "pictale.api.app",
    "pictale.engine.engine",
    "pictale.engine.tiny",
    "pictale.engine.families.sd3.generate",
    "pictale.engine.samplers",
    "pictale.service.generation",
    "pictale.story.llm",
    "pictale.story.export",
    "pictale.storage.db",
    "pictale.engine.families.flux.generate",
    "pictale.engine.tiny.flux",
    "pictale.training.loop",
]


def _commit() -> str | None:
    """pictale's commit: COMMIT written by prepare.sh (the GPU machine gets no .git), else git, else None."""
    for path in (Path(os.environ.get("DEVPROJ", ".devproj")) / "COMMIT", Path(".whl") / "COMMIT"):
        if path.is_file():
            return path.read_text().strip()
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def cmd_versions(ph: Phase) -> None:
    import importlib
    import importlib.metadata as md

    found, missing = {}, {}
    for mod, dist in MODULES:
        try:
            m = importlib.import_module(mod)
            try:
                version = md.version(dist)
            except Exception:
                version = getattr(m, "__version__", "?")
            where = str(Path(getattr(m, "__file__", "") or "?").parent)
            found[dist] = {"version": version, "from": where}
        except Exception as exc:
            missing[dist] = f"{type(exc).__name__}: {exc}"
    failed = {}
    for mod in PICTALE_MODULES:
        try:
            importlib.import_module(mod)
        except Exception as exc:
            failed[mod] = f"{type(exc).__name__}: {exc}"
    info: dict = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "packages": found,
        "missing": missing,
        "pictale_import_failures": failed,
        "device": DEVICE,
        "small": SMALL,
    }
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "sms": p.multi_processor_count,
                "cudnn": torch.backends.cudnn.version(),
            }
    except Exception as exc:
        info["torch_error"] = str(exc)
    info["pictale_commit"] = _commit()
    ph.set(**info)
    width = max(len(d) for d in found) if found else 10
    for dist, v in found.items():
        log(f"  {dist:<{width}} {v['version']:<22} {v['from']}")
    for dist, err in missing.items():
        log(f"  MISSING {dist}: {err}")
    for mod, err in failed.items():
        log(f"  IMPORT FAILS {mod}: {err}")
    for key in ("python", "torch_cuda", "cuda_available", "gpu", "pictale_commit"):
        log(f"  {key}: {info.get(key)}")
    if DEVICE.startswith("cuda") and not info.get("cuda_available"):
        raise RuntimeError("DEVICE=cuda but torch sees no GPU")
    # Only what the build and direct phases need stops the run; a server-side import failure is reported here and
    # the server phases fail on it with the server's own log.
    essential = [d for d in ("torch", "diffusers", "transformers", "numpy", "pillow", "httpx") if d in missing]
    essential += [m for m in ("pictale.engine.engine", "pictale.engine.models") if m in failed]
    if essential:
        raise RuntimeError(f"imports fail: {essential}")
    if failed or missing:
        log(f"  WARNING: imports fail (the server phases may fail): {sorted(failed) + sorted(missing)}")


# ---------------------------------------------------------------------------------------------- models


def _configs(family: str, small: bool) -> dict:
    """Component configs: pictale's packaged copies of the real ones (SMALL: same structure, tiny widths)."""
    from transformers import CLIPTextConfig

    from pictale.engine.configs import packaged_config_dir

    root = packaged_config_dir(family)
    unet = json.loads((root / "unet" / "config.json").read_text())
    vae = json.loads((root / "vae" / "config.json").read_text())
    te = CLIPTextConfig.from_pretrained(str(root / "text_encoder"))
    te2 = CLIPTextConfig.from_pretrained(str(root / "text_encoder_2")) if family == "sdxl" else None
    if small:
        for c in (te, te2):
            if c is not None:
                c.hidden_size, c.intermediate_size, c.num_hidden_layers = 32, 64, 2
                c.num_attention_heads, c.projection_dim = 4, 32
        vae.update(block_out_channels=[32, 32, 64, 64], layers_per_block=1)
        if family == "sd15":
            unet.update(
                block_out_channels=[32, 64, 64, 64],
                layers_per_block=1,
                cross_attention_dim=32,
                attention_head_dim=8,
                sample_size=8,
            )
        else:
            time_dim = 8
            unet.update(
                block_out_channels=[32, 64, 64],
                layers_per_block=1,
                transformer_layers_per_block=[1, 1, 2],
                attention_head_dim=[2, 4, 4],
                cross_attention_dim=te.hidden_size + te2.hidden_size,
                addition_time_embed_dim=time_dim,
                projection_class_embeddings_input_dim=6 * time_dim + te2.projection_dim,
                sample_size=8,
            )
    return {"root": root, "unet": unet, "vae": vae, "text_encoder": te, "text_encoder_2": te2}


def _components(family: str, small: bool, device) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    c = _configs(family, small)
    with torch.device(device):
        out = {
            "unet": UNet2DConditionModel.from_config(c["unet"]),
            "vae": AutoencoderKL.from_config(c["vae"]),
            "text_encoder": CLIPTextModel(c["text_encoder"]),
        }
        if family == "sdxl":
            out["text_encoder_2"] = CLIPTextModelWithProjection(c["text_encoder_2"])
    return out


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def cmd_archcheck(ph: Phase) -> None:
    """Full-size components on the meta device (no memory): their parameter counts must be the real ones."""
    for family in ("sd15", "sdxl"):
        comps = _components(family, False, "meta")
        counts = {k: _count(m) for k, m in comps.items()}
        match = {k: counts[k] == REAL_PARAMS[family][k] for k in counts}
        ph.set(**{family: {"params": counts, "matches_real": match}})
        log(f"  {family} full-size params {counts} match real: {match}")
        if not all(match.values()):
            raise RuntimeError(f"{family}: parameter counts differ from the real model: {counts}")
    import flux_gpu

    flux_gpu.archcheck(ph)


def cmd_build(ph: Phase, family: str) -> None:
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    dtype = torch.float16 if cuda() else torch.float32
    out_dir = model_dir(family)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    comps = _components(family, SMALL, DEVICE)
    root = _configs(family, SMALL)["root"]
    if cuda():
        torch.cuda.synchronize()
    params = {k: _count(m) for k, m in comps.items()}
    ph.set(
        family=family,
        small=SMALL,
        dtype=str(dtype),
        params=params,
        params_total=sum(params.values()),
        matches_real=None if SMALL else {k: params[k] == REAL_PARAMS[family][k] for k in params},
        init_s=round(time.perf_counter() - t0, 2),
    )
    log(f"  {family}: params {params} (init {time.perf_counter() - t0:.1f}s)")
    tok = CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    if family == "sd15":
        pipe = StableDiffusionPipeline(
            vae=comps["vae"],
            text_encoder=comps["text_encoder"],
            tokenizer=tok,
            unet=comps["unet"],
            scheduler=PNDMScheduler.from_pretrained(str(root / "scheduler")),
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            vae=comps["vae"],
            text_encoder=comps["text_encoder"],
            text_encoder_2=comps["text_encoder_2"],
            tokenizer=tok,
            tokenizer_2=CLIPTokenizer.from_pretrained(str(root / "tokenizer_2")),
            unet=comps["unet"],
            scheduler=EulerDiscreteScheduler.from_pretrained(str(root / "scheduler")),
            force_zeros_for_empty_prompt=True,
        )
    pipe.set_progress_bar_config(disable=True)
    # Random init gives growing activations through many layers: scale weight matrices down (as
    # tools/peer-bench/build_sd15_fullsize_random.py does) and check a short fp16 run stays finite; halve again if not.
    size = SIZE[family]
    scale_total, smoke = 1.0, {}
    for attempt in range(4):
        with torch.no_grad():
            for m in comps.values():
                for p in m.parameters():
                    if p.ndim > 1:
                        p.mul_(0.5)
        scale_total *= 0.5
        pipe.to(dtype)
        t = time.perf_counter()
        with torch.inference_mode():
            img = pipe(
                PROMPT,
                num_inference_steps=2,
                height=size,
                width=size,
                guidance_scale=CFG,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="np",
            ).images
        finite = bool(np.isfinite(img).all())
        smoke = {
            "attempt": attempt,
            "finite": finite,
            "mean": r4(np.nanmean(img)),
            "std": r4(np.nanstd(img)),
            "s": round(time.perf_counter() - t, 2),
        }
        log(f"  smoke run {size}px 2 steps: {smoke}")
        if finite:
            break
    ph.set(weight_scale=scale_total, smoke=smoke)
    if not smoke.get("finite"):
        raise RuntimeError(f"outputs stay non-finite in {dtype} after scaling weights by {scale_total}")
    t = time.perf_counter()
    pipe.to("cpu")  # save from host memory (the same path on cuda and cpu)
    if cuda():
        torch.cuda.empty_cache()
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    pipe.save_pretrained(str(out_dir))
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    ph.set(
        save_s=round(time.perf_counter() - t, 2),
        folder=str(out_dir),
        folder_gib=round(sum(p.stat().st_size for p in files) / 2**30, 3),
        weight_files=sorted(str(p.relative_to(out_dir)) for p in files if p.suffix == ".safetensors"),
    )
    del pipe, comps
    # pictale must see the folder as this family (model_index.json / unet config), and its start-up path must take it;
    # resolve_model also hashes the UNet weights once into the hash cache beside the folder (the servers reuse it).
    from pictale.engine.models import detect_family, resolve_model

    t = time.perf_counter()
    entry = resolve_model(str(out_dir), WORK / "pictale-models")
    detected = detect_family(out_dir)
    ph.set(
        pictale_detect_family=detected,
        pictale_entry_family=entry.family,
        pictale_title=entry.title,
        hash_s=round(time.perf_counter() - t, 2),
        build_total_s=round(time.perf_counter() - t0, 2),
    )
    log(f"  pictale sees {out_dir.name} as {detected} (entry {entry.title}, family {entry.family})")
    if detected != family or entry.family != family:
        raise RuntimeError(f"pictale detects {detected}/{entry.family}, expected {family}")


# ---------------------------------------------------------------------------------------------- direct


def cmd_direct(ph: Phase, family: str) -> None:
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    folder = model_dir(family)
    if not (folder / "model_index.json").is_file():
        raise RuntimeError(f"no model folder {folder} (build failed or was skipped)")
    dtype = torch.float16 if cuda() else torch.float32
    size = SIZE[family]
    mem = GpuMem().start()

    def sync():
        if cuda():
            torch.cuda.synchronize()

    try:
        t = time.perf_counter()
        if family == "sdxl":
            pipe = StableDiffusionXLPipeline.from_pretrained(
                str(folder), dtype=dtype, use_safetensors=True, local_files_only=True
            )
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                str(folder),
                dtype=dtype,
                use_safetensors=True,
                local_files_only=True,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        pipe.to(DEVICE)
        pipe.set_progress_bar_config(disable=True)
        sync()
        ph.set(
            family=family,
            size=size,
            steps=STEPS,
            cfg=CFG,
            dtype=str(dtype),
            load_s=round(time.perf_counter() - t, 2),
            scheduler="EulerDiscreteScheduler",
            attn_processor=type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__,
        )
        base = dict(pipe.scheduler.config)

        def call(prompts, seeds, output_type="pil"):
            pipe.scheduler = EulerDiscreteScheduler.from_config(base)  # a fresh scheduler per call, as pictale
            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                images = pipe(
                    prompt=prompts,
                    num_inference_steps=STEPS,
                    height=size,
                    width=size,
                    guidance_scale=CFG,
                    generator=gens,
                    output_type=output_type,
                ).images
            sync()
            return images, time.perf_counter() - t0

        # single image: WARM warm-ups (the first returns floats, checked finite), N timed
        if cuda():
            torch.cuda.reset_peak_memory_stats()
        first, _ = call([PROMPT], [SEED], output_type="np")
        ph.set(finite=bool(np.isfinite(first).all()), image_std=r4(np.nanstd(first)))
        for _ in range(WARM - 1):
            call([PROMPT], [SEED])
        times, imgs = [], []
        for _ in range(N):
            images, s = call([PROMPT], [SEED])
            times.append(s)
            imgs.append(to_uint8(images[0]))
        np.save(WORK / f"direct_{family}_single.npy", imgs[0])
        from pictale.storage.infotext import encode_png

        png = []
        for _ in range(3):
            t0 = time.perf_counter()
            encode_png(images[0], f"{PROMPT}\nSteps: {STEPS}, Sampler: Euler, CFG scale: {CFG}, Seed: {SEED}")
            png.append(time.perf_counter() - t0)
        ph.set(
            single_median_s=r4(median(times)),
            single_min_s=r4(min(times)),
            single_all_s=[r4(x) for x in times],
            single_repeatable=bool(all((im == imgs[0]).all() for im in imgs)),
            png_encode_s=r4(median(png)),
            single_mem=torch_mem(torch),
            single_nvsmi_peak_mib=mem.peak(),
        )
        log(f"  direct {family} {size}px single: median {median(times):.4f}s (min {min(times):.4f}) {torch_mem(torch)}")

        if family == "sd15" and BATCH > 1:
            if cuda():
                torch.cuda.reset_peak_memory_stats()
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(BATCH)]
            seeds = [CONC_SEED0 + i for i in range(BATCH)]
            call(prompts, seeds)  # warm-up of the batch shapes
            btimes, batch_imgs = [], None
            for _ in range(BATCH_REPS):
                images, s = call(prompts, seeds)
                btimes.append(s)
                batch_imgs = [to_uint8(im) for im in images]
            ph.set(
                batch=BATCH,
                batch_median_s=r4(median(btimes)),
                batch_all_s=[r4(x) for x in btimes],
                batch_img_per_s=r4(BATCH / median(btimes)),
                single_img_per_s=r4(1 / median(times)),
                batch_mem=torch_mem(torch),
                nvsmi_peak_mib=mem.peak(),
            )
            log(
                f"  direct {family} batch of {BATCH}: median {median(btimes):.4f}s = {BATCH / median(btimes):.2f} img/s"
            )
            # bit identity: the batched rows against the same prompt+seed generated alone (per-sample generators)
            diffs, solo = [], {}
            for j in range(min(SOLO_CHECK, BATCH)):
                images, _ = call([prompts[j]], [seeds[j]])
                solo[f"i{j}"] = to_uint8(images[0])
                diffs.append(diff(batch_imgs[j], solo[f"i{j}"]))
            np.savez(WORK / f"direct_{family}_solo.npz", **solo)
            ph.set(batch_vs_solo=identity_summary(diffs), batch_vs_solo_each=diffs)
            log(f"  direct batch-of-{BATCH} rows vs solo: {identity_summary(diffs)}")
        ph.set(nvsmi_peak_mib=mem.peak())
    finally:
        mem.stop()


# ---------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(prompt: str, seed: int, size: int) -> dict:
    return {
        "prompt": prompt,
        "negative_prompt": "",
        "seed": seed,
        "steps": STEPS,
        "width": size,
        "height": size,
        "cfg_scale": CFG,
        "sampler_name": "Euler",
        "batch_size": 1,
        "n_iter": 1,
    }


def cmd_server(ph: Phase, family: str, forced: bool = False) -> None:
    import httpx
    import numpy as np

    folder = model_dir(family)
    if not (folder / "model_index.json").is_file():
        raise RuntimeError(f"no model folder {folder} (build failed or was skipped)")
    label = ph.name
    size = SIZE[family]
    port = free_port()
    data = WORK / f"data-{label}"
    args = [
        "serve",
        "--model",
        str(folder),
        "--data-dir",
        str(data),
        "--device",
        DEVICE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd = (
        [sys.executable, os.path.abspath(__file__), "forced-serve", "--", *args]
        if forced
        else [sys.executable, "-m", "pictale", *args]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    batch_log = WORK / f"{label}.batches"
    if forced:
        env["GPUCHECK_BATCH_LOG"] = str(batch_log)
    elif not cuda():
        env["PICTALE_BATCH_MAX"] = "1"  # on the CPU pictale merges by default; mimic its CUDA default (no merging)
    ph.set(
        family=family,
        size=size,
        steps=STEPS,
        cfg=CFG,
        forced_batching=forced,
        command=" ".join([*cmd[:2], "...", *cmd[-len(args) :]]),
        env_overrides={k: env[k] for k in ("PICTALE_BATCH_MAX",) if k in env},
    )
    server_log = WORK / f"{label}.log"
    mem = GpuMem()
    t0 = time.perf_counter()
    with open(server_log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    (WORK / "server.pid").write_text(str(proc.pid))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=600) as http:
            wait_up(http, proc, server_log)
            start_s = time.perf_counter() - t0
            loaded = re.findall(r"loaded (.+?) \((\w+)\) on (\S+?)/(\S+)", server_log.read_text(errors="replace"))
            ph.set(
                start_s=round(start_s, 2),
                pictale_loaded=loaded[-1] if loaded else None,
                nvsmi_after_load_mib=mem.read(),
                server_process_mib=per_process_mib(proc.pid),
            )
            log(f"  {label}: up in {start_s:.1f}s, loaded {loaded[-1] if loaded else '?'}")
            if loaded and loaded[-1][1] != family:
                raise RuntimeError(f"pictale loaded it as {loaded[-1][1]}, expected {family}")
            mem.start()

            def post(prompt, seed):
                t = time.perf_counter()
                r = http.post("/sdapi/v1/txt2img", json=body(prompt, seed, size))
                elapsed = time.perf_counter() - t
                if r.status_code != 200:
                    raise RuntimeError(f"txt2img {r.status_code}: {r.text[:500]}")
                return r.json(), elapsed

            if not forced or os.environ.get("FORCED_LATENCY") == "1":
                for _ in range(WARM):
                    post(PROMPT, SEED)
                times, imgs = [], []
                for _ in range(N):
                    res, s = post(PROMPT, SEED)
                    times.append(s)
                    imgs.append(b64_png_to_uint8(res["images"][0]))
                info = json.loads(res.get("info") or "{}")
                ph.set(
                    single_median_s=r4(median(times)),
                    single_min_s=r4(min(times)),
                    single_all_s=[r4(x) for x in times],
                    single_repeatable=bool(all((im == imgs[0]).all() for im in imgs)),
                    sampler_ran=info.get("sampler_name"),
                    nvsmi_peak_mib=mem.peak(),
                )
                log(f"  {label} {size}px single: median {median(times):.4f}s (min {min(times):.4f})")
                direct = WORK / f"direct_{family}_single.npy"
                if direct.is_file():
                    ph.set(pictale_vs_direct_same_seed=diff(imgs[0], np.load(direct)))

            if family == "sd15" and CLIENTS > 0:
                if forced:  # warm the merged batch shapes first
                    _drive(base, CLIENTS, CLIENTS, size, seed0=50_000)
                before = _lines(batch_log)
                rate, lat, images, wall = _drive(base, CLIENTS, CLIENTS * PER_CLIENT, size, seed0=CONC_SEED0)
                taken = _lines(batch_log)[len(before) :]
                ph.set(
                    clients=CLIENTS,
                    requests=CLIENTS * PER_CLIENT,
                    conc_wall_s=r4(wall),
                    conc_img_per_s=r4(rate),
                    conc_p50_s=r4(pct(lat, 50)),
                    conc_p95_s=r4(pct(lat, 95)),
                    conc_max_s=r4(max(lat)),
                    nvsmi_peak_mib=mem.peak(),
                )
                if forced:
                    ph.set(
                        batch_sizes_run=[int(x) for x in taken if x.isdigit()],
                        regroup_restarts=sum(1 for x in taken if x.endswith("r")),
                    )
                log(
                    f"  {label} {CLIENTS} clients x {PER_CLIENT}: {rate:.3f} img/s, p50 {pct(lat, 50):.3f}s "
                    f"p95 {pct(lat, 95):.3f}s" + (f", batches {taken}" if forced else "")
                )
                np.savez(WORK / f"conc_{label}.npz", **images)
                ref = WORK / ("conc_server_sd15.npz" if forced else "direct_sd15_solo.npz")
                if ref.is_file():
                    with np.load(ref) as z:
                        diffs = [diff(images[k], z[k]) for k in sorted(images) if k in z.files]
                    key = "forced_batch_vs_pictale_solo" if forced else "pictale_solo_vs_direct_solo"
                    ph.set(**{key: identity_summary(diffs)})
                    log(f"  {key}: {identity_summary(diffs)}")
            try:
                m = http.get("/sdapi/v1/memory").json().get("cuda", {})
                if "allocated" in m:
                    ph.set(
                        server_torch_peak_allocated_gib=r4(m["allocated"].get("peak", 0) / 2**30),
                        server_torch_peak_reserved_gib=r4(m.get("reserved", {}).get("peak", 0) / 2**30),
                    )
                else:
                    ph.set(server_memory_route=m)
            except Exception as exc:  # informational
                ph.set(memory_route_error=str(exc))
            ph.set(nvsmi_peak_mib=mem.peak(), server_process_mib_end=per_process_mib(proc.pid))
    finally:
        mem.stop()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        (WORK / "server.pid").unlink(missing_ok=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.is_file() else []


def _tail(path: Path, n: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def wait_up(http, proc, server_log, poll: float = 0.25) -> None:
    """Until the server answers `/sdapi/v1/options` (its log's tail in the error if it exits first)."""
    import httpx

    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(server_log, 15)}")
        try:
            if http.get("/sdapi/v1/options", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)


def _drive(base: str, clients: int, requests: int, size: int, seed0: int):
    """`requests` txt2img over `clients` threads (each sends its next when the last answered); request i has
    prompt PROMPTS[i % 8] and seed seed0 + i. Returns (img/s, latencies, {f"i{i}": uint8 image}, wall s)."""
    import httpx

    lock = threading.Lock()
    counter = iter(range(requests))
    latencies: list[float] = []
    raw: dict[str, str] = {}
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    r = http.post("/sdapi/v1/txt2img", json=body(PROMPTS[i % len(PROMPTS)], seed0 + i, size))
                    r.raise_for_status()
                except Exception as exc:
                    with lock:
                        errors.append(f"{i}: {exc}")
                    return
                with lock:
                    latencies.append(time.perf_counter() - t)
                    raw[f"i{i}"] = r.json()["images"][0]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} concurrent requests failed: {errors[:3]}")
    return requests / wall, latencies, {k: b64_png_to_uint8(v) for k, v in raw.items()}, wall


def cmd_forced_serve(argv: list[str]) -> None:
    """pictale's CLI with merged batches allowed on this device (pictale merges only float32 on the CPU, where it
    verified bit identity). With GPUCHECK_BATCH_LOG set, each worker run of generation jobs appends its job count
    there: "8" for a run that finished, "1r" for one that started over to take newcomers (a regroup)."""
    from pictale.engine import engine as engine_mod
    from pictale.jobs import queue as queue_mod

    engine_mod.Engine.batches_identically = property(lambda self: True)
    path = os.environ.get("GPUCHECK_BATCH_LOG")
    if path:

        def logged(run, count):
            def wrapper(self, arg):
                jobs = arg if isinstance(arg, list) else [arg]
                generating = any(getattr(j, "kind", "") == "generate" for j in jobs)
                try:
                    out = run(self, arg)
                except queue_mod.Regroup:
                    if generating:
                        with open(path, "a") as f:
                            f.write(f"{count(arg)}r\n")
                    raise
                if generating:
                    with open(path, "a") as f:
                        f.write(f"{count(arg)}\n")
                return out

            return wrapper

        queue_mod.JobQueue._run = logged(queue_mod.JobQueue._run, lambda job: 1)
        queue_mod.JobQueue._run_merged = logged(queue_mod.JobQueue._run_merged, len)
    from pictale.cli.main import app

    sys.argv = ["pictale", *argv]
    app()


# ---------------------------------------------------------------------------------------------- summary

PHASES = [
    "versions",
    "archcheck",
    "build_sd15",
    "direct_sd15",
    "server_sd15",
    "server_sd15_forced",
    "build_sdxl",
    "direct_sdxl",
    "server_sdxl",
    "build_flux",
    "direct_flux",
    "server_flux",
    "train_sd15",
    "train_sdxl",
    "server_sd15_compile",
    "server_sd15_lowvram",
    "server_sdxl_compile",
    "server_sdxl_lowvram",
]


def _load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    d = json.loads(path.read_text()) if path.is_file() else {}
    rc_path = RESULTS / f"{name}.rc"
    if rc_path.is_file():
        d["rc"] = int(rc_path.read_text().strip() or -1)
    skip = RESULTS / f"{name}.skipped"
    if skip.is_file():
        d["skipped"] = skip.read_text().strip()
    return d


def _status(d: dict) -> str:
    if not d:
        return "not run"
    if d.get("skipped"):
        return "SKIPPED (" + d["skipped"] + ")"
    if d.get("rc") in (124, 137, 143):
        return f"TIMED OUT (rc {d['rc']})"
    if d.get("error"):
        return "FAILED: " + d["error"][:160]
    return "ok" if d.get("done") else f"incomplete (rc {d.get('rc')})"


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def _ratio(a, b):
    return a / b if a is not None and b else None


def cmd_summary() -> None:
    import platform

    res = {name: _load(name) for name in PHASES}
    v = res["versions"]
    pk = v.get("packages", {})
    gpu = v.get("gpu") or {}
    lines = []
    add = lines.append
    add(
        f"pictale GPU check ({'SMALL dry run, ' if SMALL else ''}device {DEVICE}: {gpu.get('name', platform.processor() or 'cpu')})"
    )
    add(
        f"torch {pk.get('torch', {}).get('version')} (cuda {v.get('torch_cuda')}), diffusers {pk.get('diffusers', {}).get('version')}, "
        f"transformers {pk.get('transformers', {}).get('version')}, hub {pk.get('huggingface_hub', {}).get('version')}, "
        f"pictale {str(v.get('pictale_commit'))[:10]}, python {v.get('python')}"
    )
    add(
        f"settings: {'fp16' if cuda() else 'fp32'}, SD1.5 {SIZE['sd15']}px / SDXL {SIZE['sdxl']}px, {STEPS} steps, Euler, "
        f"CFG {CFG:g}; median of {N} after {WARM} warm-ups; concurrency {CLIENTS} clients x {PER_CLIENT}"
    )
    if gpu:
        add(f"gpu: {gpu}")
    if (RESULTS / "FALLBACK").is_file():
        add("NOTE: " + (RESULTS / "FALLBACK").read_text().strip())
    if v.get("missing") or v.get("pictale_import_failures"):
        add(f"import problems: {v.get('missing')} {v.get('pictale_import_failures')}")
    add("")
    add("phases: " + "; ".join(f"{n} {_status(res[n])}" for n in PHASES))
    for n in PHASES:
        if res[n].get("error"):
            add(f"  {n} error: {res[n]['error'][:400]}")
    loaded = {n: res[n].get("pictale_loaded") for n in ("server_sd15", "server_sd15_forced", "server_sdxl")}
    add("pictale loaded (title, family, device, dtype): " + "; ".join(f"{n} {v_}" for n, v_ in loaded.items()))
    add("")
    for fam in ("sd15", "sdxl"):
        b = res[f"build_{fam}"]
        if b.get("params"):
            add(
                f"model {fam}: {b.get('params_total', 0) / 1e6:.1f}M params {b.get('params')}, "
                f"matches real: {b.get('matches_real')}, {_f(b.get('folder_gib'))} GiB, built in {_f(b.get('build_total_s'), '{:.1f}')} s, "
                f"weight scale {b.get('weight_scale')}, smoke {b.get('smoke')}, pictale detects {b.get('pictale_detect_family')}"
            )
    a = res["archcheck"]
    if a.get("sd15"):
        add(
            f"archcheck (full-size on meta): sd15 {a['sd15'].get('matches_real')}, sdxl {a.get('sdxl', {}).get('matches_real')}, "
            f"flux dev {a.get('flux', {}).get('matches_real')}"
        )
    add("")
    add(
        f"{'single image':22} {'direct s':>9} {'pictale s':>10} {'ratio':>7} {'direct peak alloc':>18} {'direct nvsmi':>13} {'server nvsmi':>13} {'server start':>13}"
    )
    for fam in ("sd15", "sdxl"):
        d, s = res[f"direct_{fam}"], res[f"server_{fam}"]
        dm, sm = d.get("single_median_s"), s.get("single_median_s")
        alloc = (d.get("single_mem") or {}).get("max_allocated_gib")
        add(
            f"{fam + ' ' + str(SIZE[fam]) + 'px':22} {_f(dm, '{:9.4f}'):>9} {_f(sm, '{:10.4f}'):>10} {_f(_ratio(sm, dm), '{:7.3f}'):>7} "
            f"{_f(alloc, '{:.2f} GiB'):>18} {_f(d.get('nvsmi_peak_mib'), '{} MiB'):>13} {_f(s.get('nvsmi_peak_mib'), '{} MiB'):>13} "
            f"{_f(s.get('start_s'), '{:.1f} s'):>13}"
        )
    d = res["direct_sd15"]
    add(
        f"  direct PNG encode of one image (pictale does this per image): {_f(d.get('png_encode_s'), '{:.4f} s')} (sd15), "
        f"{_f(res['direct_sdxl'].get('png_encode_s'), '{:.4f} s')} (sdxl)"
    )
    add("")
    s, f = res["server_sd15"], res["server_sd15_forced"]
    direct_b = d.get("batch_img_per_s")
    direct_1 = d.get("single_img_per_s")
    add(
        f"SD1.5 {SIZE['sd15']}px throughput (img/s): direct batch of {BATCH}: {_f(direct_b)} | direct one at a time: {_f(direct_1)}"
    )
    for name, r in (("pictale default (continuous batching)", s), ("pictale, CPU bit-identity path FORCED", f)):
        rate = r.get("conc_img_per_s")
        add(
            f"  {name:38} {_f(rate)} img/s = {_f(_ratio(rate, direct_b), '{:.3f}')} x direct batch, "
            f"{_f(_ratio(rate, direct_1), '{:.3f}')} x direct single; p50 {_f(r.get('conc_p50_s'))} s p95 {_f(r.get('conc_p95_s'))} s"
            + (
                f"; runs {r.get('batch_sizes_run')} (+{r.get('regroup_restarts')} restarts to regroup)"
                if r.get("batch_sizes_run") is not None
                else ""
            )
        )
    add("")
    add("bit identity (uint8 pixels):")
    add(f"  direct batch-of-{BATCH} rows vs the same seeds alone: {d.get('batch_vs_solo')}")
    add(f"  pictale merged (forced) vs pictale alone, same requests: {f.get('forced_batch_vs_pictale_solo')}")
    add(f"  pictale alone vs direct alone (same prompt+seed): {s.get('pictale_solo_vs_direct_solo')}")
    add(
        f"  repeat runs identical: direct sd15 {d.get('single_repeatable')}, pictale sd15 {s.get('single_repeatable')}, "
        f"direct sdxl {res['direct_sdxl'].get('single_repeatable')}, pictale sdxl {res['server_sdxl'].get('single_repeatable')}"
    )
    add(
        f"  pictale vs direct single image: sd15 {s.get('pictale_vs_direct_same_seed')}, sdxl {res['server_sdxl'].get('pictale_vs_direct_same_seed')}"
    )
    add("")
    add(
        "memory: direct torch peak allocated GiB: sd15 single "
        f"{(d.get('single_mem') or {}).get('max_allocated_gib')}, batch{BATCH} {(d.get('batch_mem') or {}).get('max_allocated_gib')}, "
        f"sdxl {(res['direct_sdxl'].get('single_mem') or {}).get('max_allocated_gib')}; pictale server torch peak allocated GiB: "
        f"sd15 {s.get('server_torch_peak_allocated_gib')}, sd15 forced {f.get('server_torch_peak_allocated_gib')}, "
        f"sdxl {res['server_sdxl'].get('server_torch_peak_allocated_gib')}; nvidia-smi after load MiB: sd15 {s.get('nvsmi_after_load_mib')}, "
        f"sdxl {res['server_sdxl'].get('nvsmi_after_load_mib')}"
    )
    import flux_gpu

    lines.extend(flux_gpu.summary_lines(res))
    import train_gpu

    lines.extend(train_gpu.summary_lines(res))
    import speed_gpu

    lines.extend(speed_gpu.summary_lines(res))
    text = "\n".join(lines) + "\n"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.txt").write_text(text)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "config": {
                    "device": DEVICE,
                    "small": SMALL,
                    "size": SIZE,
                    "steps": STEPS,
                    "cfg": CFG,
                    "n": N,
                    "warm": WARM,
                    "batch": BATCH,
                    "batch_reps": BATCH_REPS,
                    "clients": CLIENTS,
                    "per_client": PER_CLIENT,
                    "solo_check": SOLO_CHECK,
                    "prompt": PROMPT,
                    "seed": SEED,
                },
                "phases": res,
            },
            indent=1,
            default=str,
        )
    )
    logs = []
    for path in sorted(WORK.glob("server_*.log")):
        body_lines = path.read_text(errors="replace").splitlines()
        logs.append(f"===== {path.name} ({len(body_lines)} lines, last 150) =====")
        logs.extend(body_lines[-150:])
    if logs:
        (OUT / "servers.log").write_text("\n".join(logs) + "\n")
    print(text, flush=True)


def main() -> int:
    argv = sys.argv[1:]
    if not argv:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "forced-serve":
        cmd_forced_serve(rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    if cmd == "summary":
        cmd_summary()
        return 0
    if cmd == "versions":
        return run_phase("versions", cmd_versions)
    if cmd == "archcheck":
        return run_phase("archcheck", cmd_archcheck)
    if cmd in ("build", "direct", "server") and rest and rest[0] == "flux":
        import flux_gpu

        fn = {"build": flux_gpu.cmd_build, "direct": flux_gpu.cmd_direct, "server": flux_gpu.cmd_server}[cmd]
        return run_phase(f"{cmd}_flux", fn)
    if cmd == "train" and rest and rest[0] in ("sd15", "sdxl"):
        import train_gpu

        return run_phase(f"train_{rest[0]}", train_gpu.cmd_train, rest[0])
    if cmd == "speed" and len(rest) == 2 and rest[0] in ("sd15", "sdxl") and rest[1] in ("compile", "lowvram"):
        import speed_gpu

        return run_phase(speed_gpu.phase_name(*rest), speed_gpu.cmd_speed, *rest)
    if cmd in ("build", "direct", "server") and rest and rest[0] in ("sd15", "sdxl"):
        family = rest[0]
        if cmd == "server":
            forced = "--forced" in rest
            return run_phase(f"server_{family}" + ("_forced" if forced else ""), cmd_server, family, forced)
        return run_phase(f"{cmd}_{family}", {"build": cmd_build, "direct": cmd_direct}[cmd], family)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
