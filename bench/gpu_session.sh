#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (the `device` tool), sized to a few minutes:
#   1. the memory estimator's CUDA check: bench/memory_grid.py on the Llama-3.2-1B shape (vocabulary 128,256),
#      full / LoRA / QLoRA at 512x4 and 2048x2 and LoRA with gradient checkpointing, now with the fused loss and
#      QLoRA's unquantized weights in bf16 (the CUDA constants were fitted before either existed: a held-out check);
#   2. bench/speed.py in bf16: weitiao, the transformers + peft baseline and TRL's SFTTrainer, LoRA r=16
#      all-linear, on a SmolLM2-135M-shaped model (demo and varied data) and the 1B shape (varied data);
#   3. bench/step_ab.py on the 1B shape: train.compile and the LoRA input casts, each against its opposite.
# Models have random weights built from configs (SmolLM2's config and tokenizer travel in .gpu/smollm2-config;
# the 1B shape uses the same tokenizer): speed and memory do not depend on the weights' values.
# What the machine lacks travels as wheels in .whl/ (transformers 5.24, peft, trl, datasets, bitsandbytes, ...):
#   bash bench/gpu_session.sh          (with $OUT set by the device tool; results land there)
# Made here before the call (both git-ignored through .git/info/exclude, both named in the call's carry):
#   .whl/  pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 ...
#          transformers==5.24.0 peft==0.21.2 trl==1.16.0 datasets==4.8.0 dill==0.4.1 multiprocess==0.70.19
#          bitsandbytes==0.50.2 gguf==0.19.0 datasketch==2.0.0 (datasets 5.x needs a huggingface_hub the image lacks)
#   .gpu/smollm2-config/  every file but model.safetensors of the cached SmolLM2 conversion (~/.cache/weitiao/models)
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
WORK=/tmp/weitiao-gpu
mkdir -p "$WORK"
export WEITIAO_CACHE=$WORK/cache
python3 - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import importlib, torch
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
for name in ("transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "pyarrow", "huggingface_hub"):
    print(name, importlib.import_module(name).__version__)
EOF
timeout 170 python3 bench/memory_grid.py --device cuda --models llama-1b --methods full,lora,qlora \
  --work "$WORK/grid" --out "$OUT/memory-cuda-fused.json" 2>&1 | tee "$OUT/grid.log"
python3 -c "
import sys; sys.path.insert(0, 'bench')
from pathlib import Path
from cuda_check import write_models
print(write_models(Path('$WORK')))" 2>&1 | tail -3
timeout 180 python3 bench/speed.py --model "$WORK/smollm2-135m-random" --methods lora --data demo,varied \
  --rows 512 --batch 16 --rounds 1 --precision bf16 --workdir "$WORK/speed-small" \
  --out "$OUT/speed-cuda-smollm2.json" 2>&1 | tee "$OUT/speed-smollm2.log"
timeout 140 python3 bench/speed.py --model "$WORK/llama-1b-random" --methods lora --data varied \
  --rows 256 --batch 8 --rounds 1 --precision bf16 --workdir "$WORK/speed-1b" \
  --out "$OUT/speed-cuda-llama1b.json" 2>&1 | tee "$OUT/speed-llama1b.log"
# 3. (added 2026-11-30, not yet run on a GPU) one bf16 LoRA step of the 1B shape, eager against compiled decoder
#    layers (train.compile) and peft's input casts against none, side by side in one process
timeout 150 python3 bench/step_ab.py --model "$WORK/llama-1b-random" --variants casts,compile --batches 4 \
  --rounds 2 --out "$OUT/step-ab-cuda-llama1b.json" 2>&1 | tee "$OUT/step-ab-llama1b.log"
echo "done in ${SECONDS} s"
