#!/usr/bin/env bash
# bash bench/gpu_prepare.sh   # here, on the CPU machine, before bench/gpu_check.sh runs on a lent GPU machine
#
# The GPU machine has torch 2.11 (CUDA 13), transformers 5.17, accelerate 1.15 and no network. This puts what it
# lacks into two folders that .git/info/exclude ignores and that travel with the working tree (64 MiB in all):
#   .whl/          wheels for CPython 3.12: trl, peft, bitsandbytes (its CUDA 13 and CPU libraries only: the other
#                  CUDA versions' libraries are 5/6 of its 43 MB), datasets and what it needs beyond the image;
#   .whl/trl112/   trl 1.12.0, the last TRL with PPOTrainer, for bench/ppo_step_time.py's comparison;
#   .whl/optional/ pyarrow 26 without its Flight and S3 libraries, installed there only if the image's is older
#                  than datasets 5.2 needs;
#   .gpu/models/   the embedded default model's tokenizer (its weights, 98 MB, cannot travel: the GPU check measures
#                  models of the same shapes with random weights, bench/random_model.py).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
rm -rf .whl .gpu
mkdir -p .whl/trl112 .whl/optional .gpu/models
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() { python3 -m pip download -q --no-deps "${platform[@]}" -d "$@"; }
download .whl trl==1.16.0 peft==0.21.2 bitsandbytes==0.50.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  fsspec==2026.9.0
download .whl/trl112 trl==1.12.0
download .whl/optional pyarrow==26.0.1
zip -q -d .whl/bitsandbytes-*.whl 'bitsandbytes/libbitsandbytes_cuda1[12]*' 'bitsandbytes/libbitsandbytes_cuda128.so' \
  'bitsandbytes/libbitsandbytes_rocm*' 'bitsandbytes/libbitsandbytes_xpu*'
zip -q -d .whl/optional/pyarrow-*.whl 'pyarrow/libarrow_flight*' 'pyarrow/_flight*' 'pyarrow/libarrow_s3*' \
  'pyarrow/_s3fs*' 'pyarrow/include/*' 'pyarrow/tests/*' 'pyarrow/src/*' >/dev/null
tokenizer=$(python3 -c 'from workbench.modeling.default_model import ensure_default_tokenizer as t; print(t())')
cp -r "$tokenizer" .gpu/models/
du -sh .whl .gpu
