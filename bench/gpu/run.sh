#!/usr/bin/env bash
# pictale on a GPU: random-weight SD 1.5 / SDXL / FLUX.1 [dev] with the real architectures (built on the GPU), direct
# diffusers against pictale's /sdapi/v1/txt2img (latency, concurrency throughput, memory, bit identity; Flux: memory
# modes full bf16 / VAE tiling / model CPU offload / fp8 layerwise).
#
#   bash bench/gpu/run.sh                 from the repo root; wheels in .whl/ (carried, git-ignored; prepare.sh)
#   FAMILIES=flux bash bench/gpu/run.sh   only the Flux phases (FAMILIES: any of "sd15 sdxl flux", default all three)
#   ROWS=train FAMILIES="sd15 sdxl" bash bench/gpu/run.sh   build + LoRA training rows only (ROWS: any of
#                                         "serve train speed", default "serve": direct/server phases; train:
#                                         train_gpu.py; speed: direct + `serve --compile` / `--low-vram`, speed_gpu.py)
#
# Results: $OUT/results.json, $OUT/summary.txt, $OUT/log.txt, $OUT/servers.log ($OUT unset: /tmp/gpu-out).
# Each phase is time-boxed and the whole run stops starting phases after LIMIT_S seconds (default 560).
# CPU dry run (here, no wheels): PY=<venv>/bin/python SKIP_WHEELS=1 SMALL=1 DEVICE=cpu bash bench/gpu/run.sh
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
START=$(date +%s)
export OUT=${OUT:-/tmp/gpu-out}
export WORK=${WORK:-/tmp/gpu-work}
export DEVICE=${DEVICE:-cuda} SMALL=${SMALL:-0}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DEVPROJ=$ROOT/.devproj
# pictale itself: .devproj/src where prepare.sh of the shared gpu-check made one, else this checkout's src/
SRC=$ROOT/src; [ -d "$ROOT/.devproj/src" ] && SRC=$ROOT/.devproj/src
export TOKENIZERS_PARALLELISM=false
# CPU dry run on a shared 2-core machine: one thread per process (two contend badly there); the GPU run keeps defaults
[ "$DEVICE" = cpu ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
LIMIT_S=${LIMIT_S:-560}
FAMILIES=${FAMILIES:-sd15 sdxl flux}
has() { case " $FAMILIES " in *" $1 "*) return 0;; esac; return 1; }
ROWS=${ROWS:-serve}
row() { case " $ROWS " in *" $1 "*) return 0;; esac; return 1; }
RESERVE_S=${RESERVE_S:-15}   # kept for the summary
SITE=${SITE:-/tmp/site}
HERE=$ROOT/bench/gpu
mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK/results"
: > "$OUT/log.txt"
exec > >(tee -a "$OUT/log.txt") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }
echo "### pictale gpu-check: FAMILIES='$FAMILIES' ROWS='$ROWS' DEVICE=$DEVICE SMALL=$SMALL LIMIT_S=$LIMIT_S OUT=$OUT WORK=$WORK ($(date -u +%FT%TZ))"

if [ "${SKIP_WHEELS:-0}" != 1 ]; then
  echo "### installing $(ls .whl/*.whl 2>/dev/null | wc -l) wheels into $SITE"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || echo "### WARNING: wheel install returned non-zero"
  export PYTHONPATH=$SITE:$SRC
else
  export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
fi
echo "### PYTHONPATH=$PYTHONPATH python=$($PY -c 'import sys; print(sys.executable, sys.version.split()[0])') (+$(elapsed)s)"

# transformers 5.25 (what pictale is tested with) needs huggingface_hub >= 2.4, carried with it. Should that set not
# import (here) or break inside the first build (below), fall back once to the machine's own transformers, hub, peft
# and accelerate (diffusers 0.42 takes hub >= 1.32) and say so in the log and the summary.
fallback_transformers() {
  echo "### FALLBACK ($1): removing transformers, huggingface_hub, kernels, peft, accelerate from $SITE"
  rm -rf "$SITE"/transformers "$SITE"/transformers-* "$SITE"/huggingface_hub "$SITE"/huggingface_hub-* \
    "$SITE"/kernels "$SITE"/kernels-* "$SITE"/peft "$SITE"/peft-* "$SITE"/accelerate "$SITE"/accelerate-*
  echo "transformers fallback to the machine's own ($1)" > "$WORK/results/FALLBACK"
}
if [ "${SKIP_WHEELS:-0}" != 1 ] && ! $PY -c "import transformers, diffusers; from transformers import CLIPTextModel; from diffusers import StableDiffusionXLPipeline" 2>"$WORK/import.err"; then
  echo "### WARNING: transformers/diffusers from the wheels do not import:"; tail -5 "$WORK/import.err"
  fallback_transformers "import failed"
fi

if command -v nvidia-smi >/dev/null; then
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv
else
  echo "### no nvidia-smi"
fi
echo "### cpus: $(getconf _NPROCESSORS_ONLN), mem: $(free -g 2>/dev/null | awk '/Mem/{print $2" GiB"}'), disk /tmp: $(df -h /tmp | awk 'NR==2{print $4" free"}')"

stop_leftover_server() {
  # a phase killed at its time box can leave the server it started; end exactly that process
  if [ -f "$WORK/server.pid" ]; then
    local pid; pid=$(cat "$WORK/server.pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "### stopping leftover server pid $pid"; kill "$pid" 2>/dev/null; sleep 5; kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$WORK/server.pid"
  fi
}

# phase NAME BOX_S MIN_S ARGS...: run gpucheck.py ARGS within min(BOX_S, time left); skip it below MIN_S left
phase() {
  local name=$1 box=$2 min=$3; shift 3
  local left=$(( LIMIT_S - $(elapsed) - RESERVE_S ))
  if [ "$left" -lt "$min" ]; then
    echo "### SKIP $name: past the time limit (${left}s left of ${LIMIT_S}s, it needs ${min}s)"
    echo "past the ${LIMIT_S}s limit: ${left}s left, needs ${min}s" > "$WORK/results/$name.skipped"
    return
  fi
  local t=$box; [ "$left" -lt "$t" ] && t=$left
  echo "### $name (time box ${t}s) at +$(elapsed)s"
  local t0; t0=$(date +%s)
  timeout -k 10 "$t" $PY "$HERE/gpucheck.py" "$@"
  local rc=$?
  echo "$rc" > "$WORK/results/$name.rc"
  case $rc in
    0) echo "### $name ok in $(( $(date +%s) - t0 ))s";;
    124|137) echo "### $name TIMED OUT after ${t}s (rc $rc)";;
    *) echo "### $name FAILED rc $rc after $(( $(date +%s) - t0 ))s";;
  esac
  stop_leftover_server
}

phase versions 90 20 versions
if [ "$(cat "$WORK/results/versions.rc" 2>/dev/null)" != 0 ]; then
  echo "### imports fail: no measurement possible (see above)"
else
  [ "$SMALL" = 1 ] && phase archcheck 90 20 archcheck
  if has sd15; then
    phase build_sd15 100 30 build sd15
    if [ "${SKIP_WHEELS:-0}" != 1 ] && [ ! -f "$WORK/results/FALLBACK" ] && [ "$(cat "$WORK/results/build_sd15.rc" 2>/dev/null)" != 0 ] \
       && grep -q 'transformers/\|huggingface_hub/' "$WORK/results/build_sd15.json" 2>/dev/null; then
      fallback_transformers "build_sd15 failed inside transformers/huggingface_hub"
      phase build_sd15 100 30 build sd15
    fi
    if row serve; then
      phase direct_sd15 100 30 direct sd15
      phase server_sd15 130 45 server sd15
      phase server_sd15_forced 100 40 server sd15 --forced
    fi
    row train && phase train_sd15 150 40 train sd15
    if row speed; then
      row serve || phase direct_sd15 100 30 direct sd15   # the eager reference: time, pixels, peak memory
      phase server_sd15_compile 240 90 speed sd15 compile
      phase server_sd15_lowvram 100 40 speed sd15 lowvram
    fi
  fi
  if has sdxl; then
    phase build_sdxl 150 50 build sdxl
    if row serve; then
      phase direct_sdxl 100 35 direct sdxl
      phase server_sdxl 120 45 server sdxl
    fi
    row train && phase train_sdxl 240 60 train sdxl
    if row speed; then
      row serve || phase direct_sdxl 100 35 direct sdxl
      phase server_sdxl_compile 300 120 speed sdxl compile
      phase server_sdxl_lowvram 120 45 speed sdxl lowvram
    fi
  fi
  if has flux; then
    # full size: ~16.8B parameters in bf16 (34 GiB), saved to $WORK/models (~32 GiB of disk)
    phase build_flux 200 90 build flux
    if [ "${SKIP_WHEELS:-0}" != 1 ] && [ ! -f "$WORK/results/FALLBACK" ] && [ "$(cat "$WORK/results/build_flux.rc" 2>/dev/null)" != 0 ] \
       && grep -q 'transformers/\|huggingface_hub/' "$WORK/results/build_flux.json" 2>/dev/null; then
      fallback_transformers "build_flux failed inside transformers/huggingface_hub"
      phase build_flux 200 90 build flux
    fi
    phase direct_flux 180 60 direct flux
    phase server_flux 180 70 server flux
    rm -rf "$WORK/models/flux-dev-rand"  # 32 GiB
  fi
fi
echo "### summary at +$(elapsed)s"
timeout -k 5 60 $PY "$HERE/gpucheck.py" summary || echo "### summary failed"
echo "### total $(elapsed)s"
