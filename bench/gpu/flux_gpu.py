"""The Flux rows of the GPU check: FLUX.1 [dev] with the full-size architecture and random weights, built on the GPU
in bf16 (nothing downloaded), direct diffusers `FluxPipeline` against pictale's `/sdapi/v1/txt2img`, and peak memory
per memory mode. gpucheck.py dispatches here:

    gpucheck.py archcheck            (also) the full-size Flux components on the meta device: parameter counts
    gpucheck.py build flux           random weights (transformer, T5-XXL-shaped and CLIP-L-shaped encoders, 16-channel
                                     VAE), smoke run, saved as a diffusers folder that pictale detects as flux dev
    gpucheck.py direct flux          FluxPipeline from that folder: latency at FLUX_SIZE, then the memory modes
                                     full bf16 / VAE tiling / model CPU offload / fp8 layerwise / fp8 + offload
    gpucheck.py server flux          `pictale serve` on it (PICTALE_DTYPE=bfloat16), the same request over HTTP

Environment (SMALL=1: tiny shapes for a CPU dry run): FLUX_SIZE (1024 | 64), FLUX_STEPS (8 | 2), FLUX_MEM_STEPS
(2 | 1), FLUX_N (3 | 2), FLUX_GUIDANCE (3.5), FLUX_T5_TOKENS (256, pictale's default T5 limit), FLUX_T5_LAYERS
(24 = T5-XXL; fewer for a smaller encoder of the same width), FLUX_DTYPE (bfloat16).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import time

import gpucheck as g

FAMILY = "flux"
SIZE = g._int("FLUX_SIZE", 1024, 64)
STEPS = g._int("FLUX_STEPS", 8, 2)
MEM_STEPS = g._int("FLUX_MEM_STEPS", 2, 1)
N = g._int("FLUX_N", 3, 2)
WARM = g._int("FLUX_WARM", 1, 1)
GUIDANCE = float(os.environ.get("FLUX_GUIDANCE") or 3.5)
T5_TOKENS = g._int("FLUX_T5_TOKENS", 256, 256)
T5_LAYERS = g._int("FLUX_T5_LAYERS", 24, 2)
DTYPE_NAME = os.environ.get("FLUX_DTYPE") or "bfloat16"
SEED = 1

REAL_PARAMS = {
    # FLUX.1 [dev] transformer (guidance embedding included), ae.safetensors, CLIP-L text, T5-v1.1-XXL encoder
    "transformer": 11_901_408_320,
    "vae": 83_819_683,
    "text_encoder": 123_060_480,
    "text_encoder_2": 4_762_310_656,
}
MODES = ["full_bf16", "vae_tiling", "model_cpu_offload", "fp8_layerwise", "fp8_layerwise+offload"]


def dtype():
    import torch

    return getattr(torch, DTYPE_NAME)


def model_dir():
    return g.MODELS / "flux-dev-rand"


@contextlib.contextmanager
def default_dtype(dt):
    """Build modules directly in `dt` (no float32 copy of 16.8B parameters first)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def configs(small: bool, t5_layers: int) -> dict:
    """Full size: FLUX.1 [dev] (flux.md section 1), T5-v1.1-XXL's encoder, CLIP-L (pictale's packaged SD 1.5 text
    encoder config), the FLUX.1 VAE (SD's VAE blocks, 16 latent channels, no quant convs). SMALL: tiny widths."""
    from transformers import CLIPTextConfig, T5Config

    from pictale.engine.configs import packaged_config_dir
    from pictale.engine.tiny.flux import FLUX_VAE

    root = packaged_config_dir("sd15")
    clip = CLIPTextConfig.from_pretrained(str(root / "text_encoder"))
    vae = json.loads((root / "vae" / "config.json").read_text())
    vae.update(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, sample_size=1024, **FLUX_VAE)
    t5 = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=t5_layers, num_heads=64)
    transformer = dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24)
    transformer.update(joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))
    if small:
        clip.hidden_size, clip.intermediate_size, clip.num_hidden_layers = 32, 64, 2
        clip.num_attention_heads, clip.projection_dim = 4, 32
        vae.update(block_out_channels=[32, 32, 64, 64], layers_per_block=1, sample_size=64)
        t5.update(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_heads=4)
        transformer.update(
            num_layers=1,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=64,
            pooled_projection_dim=32,
            axes_dims_rope=(4, 6, 6),
        )
    t5_config = T5Config(
        **t5,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    transformer.update(patch_size=1, in_channels=64, guidance_embeds=True)
    return {"transformer": transformer, "vae": vae, "text_encoder": clip, "text_encoder_2": t5_config, "root": root}


def components(small: bool, device, dt, t5_layers: int = T5_LAYERS) -> dict:
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    c = configs(small, t5_layers)
    with torch.device(device), default_dtype(dt):
        return {
            "transformer": FluxTransformer2DModel(**c["transformer"]),
            "vae": AutoencoderKL.from_config(c["vae"]),
            "text_encoder": CLIPTextModel(c["text_encoder"]),
            "text_encoder_2": T5EncoderModel(c["text_encoder_2"]),
        }


def archcheck(ph) -> None:
    import torch

    comps = components(False, "meta", torch.bfloat16, t5_layers=24)
    counts = {k: g._count(m) for k, m in comps.items()}
    match = {k: counts[k] == REAL_PARAMS[k] for k in counts}
    ph.set(flux={"params": counts, "matches_real": match})
    g.log(f"  flux dev full-size params {counts} match real: {match}")
    if not all(match.values()):
        raise RuntimeError(f"flux: parameter counts differ from the real model: {counts}")


def build_pipe(comps: dict):
    from diffusers import FluxPipeline
    from transformers import CLIPTokenizer

    from pictale.engine.configs import packaged_config_dir
    from pictale.engine.tiny.flux import flux_scheduler
    from pictale.engine.tiny.sd3 import tiny_t5_tokenizer

    pipe = FluxPipeline(
        scheduler=flux_scheduler("dev"),  # FLUX.1 [dev]'s: shift 3, dynamic shifting 0.5..1.15 over 256..4096
        vae=comps["vae"],
        text_encoder=comps["text_encoder"],
        tokenizer=CLIPTokenizer.from_pretrained(str(packaged_config_dir("sd15") / "tokenizer")),
        text_encoder_2=comps["text_encoder_2"],
        tokenizer_2=tiny_t5_tokenizer(),  # 461 pieces: ids in range of T5's 32128, all the random encoder needs
        transformer=comps["transformer"],
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encoders_note() -> str:
    t5 = "T5-XXL-shaped encoder (24 layers)" if T5_LAYERS == 24 else f"T5-XXL-width encoder with {T5_LAYERS} layers"
    return ("SMALL: tiny widths" if g.SMALL else f"{t5}, CLIP-L-shaped encoder") + f", {DTYPE_NAME}"


def call(pipe, seed: int, steps: int, output_type: str = "pil"):
    """The direct call, with the arguments pictale passes for this request (cfg_scale 1: one pass per step)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe._flux_base_scheduler)  # fresh, as pictale
    with torch.inference_mode():
        return pipe(
            g.PROMPT,
            num_inference_steps=steps,
            height=SIZE,
            width=SIZE,
            guidance_scale=GUIDANCE,
            max_sequence_length=T5_TOKENS,
            generator=[torch.Generator("cpu").manual_seed(seed)],
            output_type=output_type,
        ).images


def sync() -> None:
    import torch

    if g.cuda():
        torch.cuda.synchronize()


def free() -> None:
    import torch

    gc.collect()
    if g.cuda():
        torch.cuda.empty_cache()


def cmd_build(ph) -> None:
    import shutil

    import numpy as np
    import torch

    dt = dtype()
    out_dir = model_dir()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    comps = components(g.SMALL, g.DEVICE, dt)
    sync()
    params = {k: g._count(m) for k, m in comps.items()}
    ph.set(
        family=FAMILY,
        variant="dev",
        small=g.SMALL,
        dtype=str(dt),
        encoders=encoders_note(),
        params=params,
        params_total=sum(params.values()),
        init_s=round(time.perf_counter() - t0, 2),
        matches_real=None if g.SMALL else {k: params[k] == REAL_PARAMS[k] for k in params},
        param_dtypes=sorted({str(p.dtype) for m in comps.values() for p in m.parameters()}),
        loaded_mem=g.torch_mem(torch),
    )
    g.log(f"  flux: params {params} (init {time.perf_counter() - t0:.1f}s) {encoders_note()}")
    pipe = build_pipe(comps)
    pipe._flux_base_scheduler = dict(pipe.scheduler.config)
    # Random weights through 57 blocks: scale weight matrices down until a short run stays finite (as for SD)
    scale_total, smoke = 1.0, {}
    for attempt in range(4):
        with torch.no_grad():
            for m in comps.values():
                for p in m.parameters():
                    if p.ndim > 1:
                        p.mul_(0.5)
        scale_total *= 0.5
        t = time.perf_counter()
        img = call(pipe, 0, 2, output_type="np")
        finite = bool(np.isfinite(img).all())
        smoke = {
            "attempt": attempt,
            "finite": finite,
            "mean": g.r4(np.nanmean(img)),
            "std": g.r4(np.nanstd(img)),
            "s": round(time.perf_counter() - t, 2),
        }
        g.log(f"  smoke run {SIZE}px 2 steps: {smoke}")
        if finite:
            break
    ph.set(weight_scale=scale_total, smoke=smoke)
    if not smoke.get("finite"):
        raise RuntimeError(f"outputs stay non-finite in {dt} after scaling weights by {scale_total}")
    t = time.perf_counter()
    pipe.to("cpu")  # save from host memory (the same path on cuda and cpu)
    free()
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
    free()
    from pictale.engine.models import detect_family, resolve_model

    t = time.perf_counter()
    entry = resolve_model(str(out_dir), g.WORK / "pictale-models")  # hashes the first transformer shard once
    detected = detect_family(out_dir)
    ph.set(
        pictale_detect_family=detected,
        pictale_entry_family=entry.family,
        pictale_title=entry.title,
        hash_s=round(time.perf_counter() - t, 2),
        build_total_s=round(time.perf_counter() - t0, 2),
    )
    g.log(f"  pictale sees {out_dir.name} as {detected} (entry {entry.title}, family {entry.family})")
    if detected != FAMILY or entry.family != FAMILY:
        raise RuntimeError(f"pictale detects {detected}/{entry.family}, expected {FAMILY}")


def _alloc_gib() -> float | None:
    import torch

    return round(torch.cuda.memory_allocated() / 2**30, 3) if g.cuda() else None


def cmd_direct(ph) -> None:
    """Latency at STEPS (full bf16), then one MEM_STEPS call per memory mode with its loaded and peak memory."""
    import numpy as np
    import torch
    from diffusers import FluxPipeline

    folder = model_dir()
    if not (folder / "model_index.json").is_file():
        raise RuntimeError(f"no model folder {folder} (build failed or was skipped)")
    dt = dtype()
    mem = g.GpuMem().start()
    try:
        t = time.perf_counter()
        pipe = FluxPipeline.from_pretrained(str(folder), dtype=dt, use_safetensors=True, local_files_only=True)
        pipe.to(g.DEVICE)
        pipe.set_progress_bar_config(disable=True)
        pipe._flux_base_scheduler = dict(pipe.scheduler.config)
        sync()
        attn = pipe.transformer.attn_processors
        ph.set(
            family=FAMILY,
            size=SIZE,
            steps=STEPS,
            guidance=GUIDANCE,
            t5_tokens=T5_TOKENS,
            dtype=str(dt),
            encoders=encoders_note(),
            load_s=round(time.perf_counter() - t, 2),
            loaded_alloc_gib=_alloc_gib(),
            attn_processor=type(attn[next(iter(attn))]).__name__,
        )
        if g.cuda():
            torch.cuda.reset_peak_memory_stats()
        first = call(pipe, SEED, STEPS, output_type="np")
        ph.set(finite=bool(np.isfinite(first).all()), image_std=g.r4(np.nanstd(first)))
        for _ in range(WARM - 1):
            call(pipe, SEED, STEPS)
        times, imgs = [], []
        for _ in range(N):
            sync()
            t0 = time.perf_counter()
            images = call(pipe, SEED, STEPS)
            sync()
            times.append(time.perf_counter() - t0)
            imgs.append(g.to_uint8(images[0]))
        np.save(g.WORK / "direct_flux_single.npy", imgs[0])
        ph.set(
            single_median_s=g.r4(g.median(times)),
            single_min_s=g.r4(min(times)),
            single_all_s=[g.r4(x) for x in times],
            per_step_s=g.r4(g.median(times) / STEPS),
            single_repeatable=bool(all((im == imgs[0]).all() for im in imgs)),
            single_mem=g.torch_mem(torch),
            single_nvsmi_peak_mib=mem.peak(),
        )
        g.log(f"  direct flux {SIZE}px {STEPS} steps: median {g.median(times):.4f}s {g.torch_mem(torch)}")
        memory_modes(ph, pipe, mem)
    finally:
        mem.stop()


def memory_modes(ph, pipe, mem) -> None:
    """Each mode: set up, reset the peak counters, one MEM_STEPS call; loaded = allocated just before the call."""
    import torch

    results: dict[str, dict] = {}
    reference = {}

    def run(name: str) -> None:
        free()
        if g.cuda():
            torch.cuda.reset_peak_memory_stats()
        loaded = _alloc_gib()
        samples_before = len(mem.samples)
        sync()
        t0 = time.perf_counter()
        img = g.to_uint8(call(pipe, SEED, MEM_STEPS)[0])
        sync()
        r = {"s": g.r4(time.perf_counter() - t0), "loaded_alloc_gib": loaded, **g.torch_mem(torch)}
        after = mem.samples[samples_before:]
        r["nvsmi_peak_mib"] = max(after) if after else None
        if name == "full_bf16":
            reference["img"] = img
        elif "img" in reference:
            r["vs_full_bf16"] = g.diff(img, reference["img"])
        results[name] = r
        g.log(f"  memory mode {name}: {r}")

    def attempt(name: str, setup, teardown=None) -> None:
        try:
            setup()
            run(name)
        except Exception as exc:
            if str(exc).startswith("skipped"):
                results[name] = {"error": str(exc)}
                g.log(f"  memory mode {name}: {exc}")
            else:
                results[name] = {"error": f"FAILED: {type(exc).__name__}: {exc}"[:400]}
                g.log(f"  memory mode {name} {results[name]['error']}")
        finally:
            if teardown is not None:
                try:
                    teardown()
                except Exception as exc:
                    results[name]["teardown_error"] = f"{type(exc).__name__}: {exc}"[:300]
            ph.set(memory_steps=MEM_STEPS, memory_modes=results)

    def offload_on() -> None:
        if not g.cuda():
            raise RuntimeError("skipped (CPU): enable_model_cpu_offload needs an accelerator")
        pipe.to("cpu")
        free()
        pipe.enable_model_cpu_offload()

    def offload_off() -> None:
        if g.cuda():
            pipe.remove_all_hooks()
            pipe.to(g.DEVICE)

    def fp8_on() -> None:
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype())

    attempt("full_bf16", lambda: None)
    attempt("vae_tiling", pipe.vae.enable_tiling, pipe.vae.disable_tiling)
    attempt("model_cpu_offload", offload_on, offload_off)
    attempt("fp8_layerwise", fp8_on)  # irreversible (weights now stored in fp8): last but one
    if "error" not in results["fp8_layerwise"]:
        attempt("fp8_layerwise+offload", offload_on, offload_off)
    if not g.cuda():
        ph.set(memory_note="CPU dry run: no CUDA memory counters; the modes ran (offload needs an accelerator)")


def cmd_server(ph) -> None:
    import httpx
    import numpy as np

    folder = model_dir()
    if not (folder / "model_index.json").is_file():
        raise RuntimeError(f"no model folder {folder} (build failed or was skipped)")
    label = ph.name
    port = g.free_port()
    data = g.WORK / f"data-{label}"
    args = [
        "serve",
        "--model",
        str(folder),
        "--data-dir",
        str(data),
        "--device",
        g.DEVICE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd = [sys.executable, "-m", "pictale", *args]
    # pictale's "auto" dtype is float16 on CUDA; FLUX.1 is made for bf16 (and the direct run uses it)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PICTALE_DTYPE": DTYPE_NAME}
    # as the direct call: the same T5 length (dev's profile would run 512) and the whole model on the GPU
    env.update(PICTALE_T5_MAX_TOKENS=str(T5_TOKENS), PICTALE_FLUX_MEMORY=os.environ.get("FLUX_MEMORY") or "full")
    if not g.cuda():
        env["PICTALE_BATCH_MAX"] = "1"
    body = {
        "prompt": g.PROMPT,
        "negative_prompt": "",
        "seed": SEED,
        "steps": STEPS,
        "width": SIZE,
        "height": SIZE,
        "cfg_scale": 1,
        "distilled_cfg_scale": GUIDANCE,
        "sampler_name": "Euler",
        "batch_size": 1,
        "n_iter": 1,
    }
    ph.set(
        family=FAMILY,
        size=SIZE,
        steps=STEPS,
        body=body,
        command=" ".join([*cmd[:2], "...", *cmd[-len(args) :]]),
        env_overrides={
            k: env[k]
            for k in ("PICTALE_DTYPE", "PICTALE_BATCH_MAX", "PICTALE_T5_MAX_TOKENS", "PICTALE_FLUX_MEMORY")
            if k in env
        },
    )
    server_log = g.WORK / f"{label}.log"
    mem = g.GpuMem()
    t0 = time.perf_counter()
    with open(server_log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    (g.WORK / "server.pid").write_text(str(proc.pid))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=900) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}: {g._tail(server_log, 15)}")
                try:
                    if http.get("/sdapi/v1/options", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
            start_s = time.perf_counter() - t0
            import re

            loaded = re.findall(r"loaded (.+?) \((\w+)\) on (\S+?)/(\S+)", server_log.read_text(errors="replace"))
            ph.set(
                start_s=round(start_s, 2),
                pictale_loaded=loaded[-1] if loaded else None,
                nvsmi_after_load_mib=mem.read(),
                server_process_mib=g.per_process_mib(proc.pid),
            )
            g.log(f"  {label}: up in {start_s:.1f}s, loaded {loaded[-1] if loaded else '?'}")
            if loaded and loaded[-1][1] != FAMILY:
                raise RuntimeError(f"pictale loaded it as {loaded[-1][1]}, expected {FAMILY}")
            mem.start()

            def post():
                t = time.perf_counter()
                r = http.post("/sdapi/v1/txt2img", json=body)
                elapsed = time.perf_counter() - t
                if r.status_code != 200:
                    raise RuntimeError(f"txt2img {r.status_code}: {r.text[:500]}")
                return r.json(), elapsed

            for _ in range(WARM):
                post()
            times, imgs = [], []
            for _ in range(N):
                res, s = post()
                times.append(s)
                imgs.append(g.b64_png_to_uint8(res["images"][0]))
            info = json.loads(res.get("info") or "{}")
            ph.set(
                single_median_s=g.r4(g.median(times)),
                single_min_s=g.r4(min(times)),
                single_all_s=[g.r4(x) for x in times],
                infotext=info.get("infotexts", [None])[0],
                single_repeatable=bool(all((im == imgs[0]).all() for im in imgs)),
                nvsmi_peak_mib=mem.peak(),
            )
            g.log(f"  {label} {SIZE}px: median {g.median(times):.4f}s (min {min(times):.4f})")
            direct = g.WORK / "direct_flux_single.npy"
            if direct.is_file():
                ph.set(pictale_vs_direct_same_seed=g.diff(imgs[0], np.load(direct)))
                g.log(f"  pictale vs direct, same seed: {g.diff(imgs[0], np.load(direct))}")
            try:
                m = http.get("/sdapi/v1/memory").json().get("cuda", {})
                if "allocated" in m:
                    ph.set(
                        server_torch_peak_allocated_gib=g.r4(m["allocated"].get("peak", 0) / 2**30),
                        server_torch_peak_reserved_gib=g.r4(m.get("reserved", {}).get("peak", 0) / 2**30),
                    )
                else:
                    ph.set(server_memory_route=m)
            except Exception as exc:  # informational
                ph.set(memory_route_error=str(exc))
            ph.set(nvsmi_peak_mib=mem.peak(), server_process_mib_end=g.per_process_mib(proc.pid))
    finally:
        mem.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        (g.WORK / "server.pid").unlink(missing_ok=True)


def summary_lines(res: dict) -> list[str]:
    """The Flux part of summary.txt (res: phase name -> results)."""
    b, d, s = res.get("build_flux", {}), res.get("direct_flux", {}), res.get("server_flux", {})
    if not (b or d or s):
        return []
    f = g._f
    out = ["", f"FLUX.1 [dev] full architecture, random weights ({b.get('encoders') or encoders_note()})"]
    if b.get("params"):
        out.append(
            f"  model: {b.get('params_total', 0) / 1e9:.2f}B params {b.get('params')}, matches real: "
            f"{b.get('matches_real')}, {f(b.get('folder_gib'))} GiB on disk, built in {f(b.get('init_s'), '{:.1f}')} s"
            f" (total with smoke, save, hash {f(b.get('build_total_s'), '{:.1f}')} s),"
            f" weight scale {b.get('weight_scale')}, "
            f"smoke {b.get('smoke')}, pictale detects {b.get('pictale_detect_family')}"
        )
    dm, sm = d.get("single_median_s"), s.get("single_median_s")
    out.append(
        f"  {SIZE}px {STEPS} steps, guidance {GUIDANCE:g}, T5 {T5_TOKENS} tokens, cfg_scale 1 (one pass): "
        f"direct {f(dm, '{:.4f}')} s ({f(d.get('per_step_s'), '{:.4f}')} s/step), pictale {f(sm, '{:.4f}')} s, "
        f"ratio {f(g._ratio(sm, dm))}; server start {f(s.get('start_s'), '{:.1f}')} s,"
        f" direct load {f(d.get('load_s'), '{:.1f}')} s"
    )
    out.append(
        f"  pictale vs direct, same seed: {s.get('pictale_vs_direct_same_seed')}; repeatable: direct "
        f"{d.get('single_repeatable')}, pictale {s.get('single_repeatable')}; pictale loaded {s.get('pictale_loaded')}"
    )
    out.append(
        f"  torch peak allocated GiB at {STEPS} steps: direct {(d.get('single_mem') or {}).get('max_allocated_gib')}, "
        f"pictale server {s.get('server_torch_peak_allocated_gib')}; loaded (direct) {d.get('loaded_alloc_gib')}"
    )
    modes = d.get("memory_modes") or {}
    if modes:
        out.append(f"  memory modes ({d.get('memory_steps')} steps each; GiB: loaded = allocated before the call):")
        out.append(
            f"    {'mode':24} {'loaded':>8} {'peak alloc':>11} {'peak resv':>10} {'nvsmi MiB':>10} {'s':>8}"
            "  vs full bf16"
        )
        for name in MODES:
            r = modes.get(name)
            if r is None:
                out.append(f"    {name:24} not run")
            elif "error" in r:
                out.append(f"    {name:24} {r['error'][:160]}")
            else:
                out.append(
                    f"    {name:24} {f(r.get('loaded_alloc_gib'), '{:.2f}'):>8}"
                    f" {f(r.get('max_allocated_gib'), '{:.2f}'):>11} "
                    f"{f(r.get('max_reserved_gib'), '{:.2f}'):>10} {f(r.get('nvsmi_peak_mib'), '{}'):>10} "
                    f"{f(r.get('s'), '{:.3f}'):>8}  {r.get('vs_full_bf16', '-')}"
                )
        if d.get("memory_note"):
            out.append(f"    {d['memory_note']}")
    return out
