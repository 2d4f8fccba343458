#!/usr/bin/env bash
# bash bench/gpu_check.sh   # on a lent GPU machine, in one call: carry .whl and .gpu (made by bench/gpu_prepare.sh)
#
# Everything issue 19 asks of a GPU, in one run that ends by itself inside $GPU_CHECK_SECONDS (default 540), the
# results under $OUT (at most 8 files):
#   env.txt                 nvidia-smi, versions
#   tests.txt               pytest -m gpu: the CUDA 4-bit path, paged 8-bit optimizers, SFT, reward, DPO, PPO and
#                           RLOO steps, the sampling-distribution test on CUDA
#   ppo_memory.json         bench/ppo_memory.py: one 4-bit base against four models, peak torch.cuda memory
#   ppo_step_time.json      bench/ppo_step_time.py: against TRL 1.12.0's PPOTrainer, per-phase times
#   sft_throughput.json     bench/sft_throughput.py: against a plain TRL SFTTrainer script, MFU
#   model_sizes.json        bench/model_sizes.py: SFT, reward, PPO at Qwen2.5-1.5B and Llama-3.1-8B sizes
#   stderr.txt, log.txt     what went wrong, and when each part ran
# GPU_CHECK_PARTS picks parts (default: env untimed ppo_step_time sft_throughput model_sizes), SFT_BASES the SFT
# bases (default: 4bit bf16), SIZES the model_sizes configs (default: qwen2.5-1.5b-instruct llama-3.1-8b-instruct
# smollm2-135m-instruct), for a rerun of what a first run could not finish.
# The embedded default's weights cannot travel (98 MB); every model here is a published shape with random weights
# (bench/random_model.py): time and memory do not depend on the weights' values. Untimed parts run side by side
# first; the timed benchmarks then run one at a time.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$OUT/log.txt"; }
left() { echo $((DEADLINE - SECONDS)); }
cap() { local l; l=$(($(left) - 5)); echo $((l < $1 ? l : $1)); }  # a part's timeout: its own, or what is left
err() { echo "=== $1" >>"$OUT/stderr.txt"; }
PARTS=" ${GPU_CHECK_PARTS:-env untimed ppo_step_time sft_throughput model_sizes} "
want() { [[ $PARTS == *" $1 "* ]]; }

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
log "unpacking the carried wheels"
unpack() { python3 -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$@"; }
unpack /tmp/site .whl/*.whl
unpack /tmp/site112 .whl/trl112/*.whl
if ! python3 -c 'import sys, pyarrow; sys.exit(int(pyarrow.__version__.split(".")[0]) < 24)' 2>/dev/null; then
  log "the image's pyarrow is older than datasets 5.2 needs: unpacking pyarrow 26"
  unpack /tmp/site .whl/optional/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD"
export WORKBENCH_HOME=/tmp/workbench-home
mkdir -p "$WORKBENCH_HOME" && cp -r .gpu/models "$WORKBENCH_HOME/"

want env && {
  nvidia-smi
  python3 - <<'EOF'
import importlib.metadata as m, platform, sys, torch
print("python", sys.version.split()[0], platform.machine(), "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "pyarrow", "fsspec",
             "huggingface_hub", "tokenizers", "safetensors", "numpy"):
    print(name, m.version(name))
import bitsandbytes, trl, datasets, peft  # noqa: the carried ones import
print("trl from", trl.__file__)
EOF
} >"$OUT/env.txt" 2>&1
want env && log "env: $(grep -E '^(python|trl|bitsandbytes) ' "$OUT/env.txt" | tr '\n' ' ')"

small=""
if want untimed || want ppo_step_time || want sft_throughput; then  # the parts that measure the default's shape
  small=$(python3 bench/random_model.py recipes/configs/smollm2-135m-instruct 2>>"$OUT/stderr.txt" | tail -1)
  log "SmolLM2-135M shape at $small"
fi

# ── untimed, side by side ─────────────────────────────────────────────────────────────────────────────────────────
want untimed && log "tests, ppo_memory and the large random checkpoints, side by side"
want untimed && (timeout "$(cap 240)" python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_sampling_distribution.py \
  -p no:cacheprovider >"$OUT/tests.txt" 2>&1; echo "pytest exit $?" >>"$OUT/tests.txt") &
want untimed && (timeout "$(cap 240)" python3 bench/ppo_memory.py --model "$small" --out "$OUT/ppo_memory.json" >/dev/null \
  2>"$OUT/ppo_memory.err"; echo "ppo_memory exit $?" >>"$OUT/ppo_memory.err") &
want untimed && (for m in qwen2.5-1.5b-instruct llama-3.1-8b-instruct; do
  timeout "$(cap 240)" python3 bench/random_model.py "recipes/configs/$m" || echo "build $m exit $?"
done >"$OUT/builds.err" 2>&1) &
wait
if want untimed; then
  log "$(tail -2 "$OUT/tests.txt" | tr '\n' ' ')"
  for f in ppo_memory builds; do err "$f" && tail -c 3000 "$OUT/$f.err" >>"$OUT/stderr.txt" && rm "$OUT/$f.err"; done
fi

# ── timed, one at a time ──────────────────────────────────────────────────────────────────────────────────────────
timed() {  # name, its own timeout, command...
  local name=$1 limit=$2
  shift 2
  want "$name" || return 0
  if [ "$(left)" -lt 40 ]; then log "$name skipped: $(left) s left"; return; fi
  log "$name"
  timeout "$(cap "$limit")" "$@" >/dev/null 2>"$OUT/$name.err"
  log "$name exit $?"
  err "$name" && tail -c 4000 "$OUT/$name.err" >>"$OUT/stderr.txt" && rm "$OUT/$name.err"
}
timed ppo_step_time 200 python3 bench/ppo_step_time.py --model "$small" --steps 4 \
  --trl_pythonpath "/tmp/site112:/tmp/site" --out "$OUT/ppo_step_time.json"
# shellcheck disable=SC2086  # word splitting wanted: lists of bases and configs
timed sft_throughput 200 python3 bench/sft_throughput.py --model "$small" --bases ${SFT_BASES:-4bit bf16} \
  --setups trl workbench --steps 20 --warmup 4 --batch 8 --out "$OUT/sft_throughput.json"
sizes=${SIZES:-qwen2.5-1.5b-instruct llama-3.1-8b-instruct smollm2-135m-instruct}
# shellcheck disable=SC2046
timed model_sizes 560 python3 bench/model_sizes.py --models $(printf 'recipes/configs/%s ' $sizes) --timeout 240 \
  --out "$OUT/model_sizes.json"
log "done, $(left) s to spare"
