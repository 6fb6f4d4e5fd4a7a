"""The speed and memory rows of the GPU check (issue 13): `pictale serve --compile` and `--low-vram` against direct
eager diffusers on the same random-weight SD 1.5 / SDXL folders, and pictale's peak memory against direct diffusers'.
gpucheck.py dispatches here:

    gpucheck.py speed sd15|sdxl compile    `pictale serve --compile --compile-sizes SxS`: start-up time, the compile
                                           time and sizes it reports (/v1/server), one image (median of N after WARM),
                                           pixels vs direct eager, torch peak memory
    gpucheck.py speed sd15|sdxl lowvram    `pictale serve --low-vram`: one image, torch peak allocated/reserved
                                           (/sdapi/v1/memory), pixels vs direct eager (VAE tiling blends tiles)

Targets (issue 13): compiled one image <= 0.35x direct eager; pictale's peak allocated within 1.1x of direct
diffusers' for one image (from the `direct_*` and `server_*` phases). Low VRAM has no target: its speed and peak go
into the README. Environment: as gpucheck.py, plus COMPILE_BACKEND (inductor; the CPU dry run uses aot_eager, as
inductor takes minutes to compile even the small UNet on a 2-core CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gpucheck as g

MODES = {"compile": "--compile", "lowvram": "--low-vram"}
CONC_TARGET = 2.0
COMPILE_TARGET = 0.35
MEMORY_TARGET = 1.1


def phase_name(family: str, mode: str) -> str:
    return f"server_{family}_{mode}"


def cmd_speed(ph, family: str, mode: str) -> None:
    import httpx
    import numpy as np

    folder = g.model_dir(family)
    if not (folder / "model_index.json").is_file():
        raise RuntimeError(f"no model folder {folder} (build failed or was skipped)")
    size = g.SIZE[family]
    port = g.free_port()
    args = ["serve", "--model", str(folder), "--data-dir", str(g.WORK / f"data-{ph.name}"), "--device", g.DEVICE,
            "--host", "127.0.0.1", "--port", str(port), MODES[mode]]  # fmt: skip
    if mode == "compile":
        args += ["--compile-sizes", f"{size}x{size}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}  # a lone request runs alone anyway
    env["PICTALE_COMPILE_BACKEND"] = os.environ.get("COMPILE_BACKEND") or ("inductor" if g.cuda() else "aot_eager")
    cmd = [sys.executable, "-m", "pictale", *args]
    ph.set(family=family, mode=mode, size=size, steps=g.STEPS, cfg=g.CFG, command=" ".join(cmd[2:]),
           compile_backend=env["PICTALE_COMPILE_BACKEND"] if mode == "compile" else None)  # fmt: skip
    server_log = g.WORK / f"{ph.name}.log"
    mem = g.GpuMem()
    t0 = time.perf_counter()
    with open(server_log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    (g.WORK / "server.pid").write_text(str(proc.pid))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            g.wait_up(http, proc, server_log, poll=0.5)
            start_s = time.perf_counter() - t0
            speed = http.get("/v1/server").json().get("speed", {})
            ph.set(start_s=round(start_s, 2), speed=speed, nvsmi_after_load_mib=mem.read())
            g.log(f"  {ph.name}: up in {start_s:.1f}s (includes compilation), speed {speed}")
            if mode == "compile" and not speed.get("compiled"):
                raise RuntimeError(f"pictale did not compile: {speed.get('notes')}")
            mem.start()

            def post():
                t = time.perf_counter()
                r = http.post("/sdapi/v1/txt2img", json=g.body(g.PROMPT, g.SEED, size))
                if r.status_code != 200:
                    raise RuntimeError(f"txt2img {r.status_code}: {r.text[:500]}")
                return r.json(), time.perf_counter() - t

            first_s = post()[1]  # compiled: the warm-up at start-up should have made this as fast as the rest
            for _ in range(max(0, g.WARM - 1)):
                post()
            times, imgs = [], []
            for _ in range(g.N):
                res, s = post()
                times.append(s)
                imgs.append(g.b64_png_to_uint8(res["images"][0]))
            ph.set(first_request_s=g.r4(first_s), single_median_s=g.r4(g.median(times)),
                   single_min_s=g.r4(min(times)), single_all_s=[g.r4(x) for x in times],
                   single_repeatable=bool(all((im == imgs[0]).all() for im in imgs)),
                   nvsmi_peak_mib=mem.peak())  # fmt: skip
            g.log(f"  {ph.name} {size}px single: median {g.median(times):.4f}s (first {first_s:.3f}s)")
            direct = g.WORK / f"direct_{family}_single.npy"
            if direct.is_file():
                ph.set(vs_direct_eager_same_seed=g.diff(imgs[0], np.load(direct)))
            m = http.get("/sdapi/v1/memory").json().get("cuda", {})
            if "allocated" in m:
                ph.set(server_torch_peak_allocated_gib=g.r4(m["allocated"].get("peak", 0) / 2**30),
                       server_torch_peak_reserved_gib=g.r4(m.get("reserved", {}).get("peak", 0) / 2**30))  # fmt: skip
            if mode == "compile" and family == "sd15" and g.CLIENTS > 0:
                # issue 13: with --compile, 8 clients >= 2x a direct eager batch of 8. Continuous batching runs
                # batches of every size from 1 to 8: the warm drive lets the compiled UNet see them first.
                base = f"http://127.0.0.1:{port}"
                g._drive(base, g.CLIENTS, g.CLIENTS * g.PER_CLIENT, size, seed0=50_000)
                rate, lat, _, wall = g._drive(base, g.CLIENTS, g.CLIENTS * g.PER_CLIENT, size, seed0=g.CONC_SEED0)
                ph.set(clients=g.CLIENTS, conc_img_per_s=g.r4(rate), conc_p50_s=g.r4(g.pct(lat, 50)),
                       conc_p95_s=g.r4(g.pct(lat, 95)), conc_wall_s=g.r4(wall))  # fmt: skip
                g.log(f"  {ph.name} {g.CLIENTS} clients: {rate:.3f} img/s, p50 {g.pct(lat, 50):.3f}s")
            ph.set(server_process_mib_end=g.per_process_mib(proc.pid), notes=_speed_lines(server_log))
    finally:
        mem.stop()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        (g.WORK / "server.pid").unlink(missing_ok=True)


def _speed_lines(server_log) -> list[str]:
    text = server_log.read_text(errors="replace") if server_log.is_file() else ""
    return [line.strip()[-300:] for line in text.splitlines() if "compile" in line or "low VRAM" in line][-6:]


# ---------------------------------------------------------------------------------------------- summary

SPEED_PHASES = [phase_name(f, m) for f in ("sd15", "sdxl") for m in MODES]


def _peak(d: dict) -> float | None:
    return (d.get("single_mem") or {}).get("max_allocated_gib")


def summary_lines(res: dict) -> list[str]:
    """The speed/memory rows; '-' where a phase did not run (no GPU yet: the figures are open)."""
    f, ratio = g._f, g._ratio
    out = ["", f"speed and memory (issue 13; targets: compiled <= {COMPILE_TARGET}x direct eager, "
           f"pictale peak <= {MEMORY_TARGET}x direct):"]  # fmt: skip
    out.append(f"{'row':28} {'pictale s':>10} {'direct s':>9} {'ratio':>7} {'target':>8} {'compile s':>10} "
               f"{'peak alloc':>11} {'vs direct px':>28}")  # fmt: skip
    for fam in ("sd15", "sdxl"):
        direct = res.get(f"direct_{fam}", {})
        dm = direct.get("single_median_s")
        for mode in MODES:
            r = res.get(phase_name(fam, mode), {})
            sm = r.get("single_median_s")
            rt = ratio(sm, dm)
            target = f"<={COMPILE_TARGET}" if mode == "compile" else "-"
            met = "" if rt is None or mode != "compile" else (" ok" if rt <= COMPILE_TARGET else " MISS")
            same = r.get("vs_direct_eager_same_seed") or {}
            out.append(
                f"{fam + ' ' + mode:28} {f(sm, '{:10.4f}'):>10} {f(dm, '{:9.4f}'):>9} {f(rt, '{:7.3f}'):>7} "
                f"{target + met:>8} {f((r.get('speed') or {}).get('compile_seconds'), '{:.1f}'):>10} "
                f"{f(r.get('server_torch_peak_allocated_gib'), '{:.2f} GiB'):>11} "
                f"{json.dumps(same.get('max_abs')) + ' max, ' + json.dumps(same.get('frac_diff')) + ' px':>28}"
            )
        server = res.get(f"server_{fam}", {})
        sp, dp = server.get("server_torch_peak_allocated_gib"), _peak(direct)
        rt = ratio(sp, dp)
        met = "" if rt is None else (" ok" if rt <= MEMORY_TARGET else " MISS")
        out.append(f"{fam + ' memory (one image)':28} pictale {f(sp, '{:.2f}')} GiB / direct {f(dp, '{:.2f}')} GiB "
                   f"= {f(rt, '{:.3f}')} (target <= {MEMORY_TARGET}{met})")  # fmt: skip
        conc, batch = res.get(phase_name(fam, "compile"), {}).get("conc_img_per_s"), direct.get("batch_img_per_s")
        if fam == "sd15":
            rt = ratio(conc, batch)
            met = "" if rt is None else (" ok" if rt >= CONC_TARGET else " MISS")
            out.append(f"{'sd15 compile, 8 clients':28} {f(conc, '{:.3f}')} img/s / direct eager batch of 8 "
                       f"{f(batch, '{:.3f}')} img/s = {f(rt, '{:.3f}')} (target >= {CONC_TARGET}{met})")  # fmt: skip
    return out
