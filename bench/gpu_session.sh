#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (the `device` tool), sized to 8 minutes: issue 24's measurement.
#   0. bench/flex_check.py on the 1B shape: packed rows under FlexAttention against the padded batch (loss and
#      gradients in bf16, which a CPU cannot check: torch has no FlexAttention backward there) and the step time
#      of padded, mask and flex;
#   1. bench/speed.py in bf16 on the Llama-3.2-1B shape (random weights), LoRA r=16 all-linear, the varied rows
#      (1024 rows, batches of 32): weitiao at its defaults (packed rows under FlexAttention, Liger's kernels where
#      they run, fused AdamW), weitiao with the block mask instead (train.packed_attention=mask), the transformers
#      + peft baseline, baseline+liger, TRL's SFTTrainer and unsloth (its row says why where it cannot run);
#   2. the same on the long rows (8 x 2048 tokens a step, every answer token trained): weitiao against the plain
#      hand-written bf16 loop and the plain loop with Liger's kernels.
# MFU is against the bf16 matmul peak measured in the same run. Prepare the carried folders here first:
#   bash bench/gpu_prepare.sh         then carry [".whl", ".gpu"] and run:  bash bench/gpu_session.sh
# Results land in $OUT (speed-cuda-*.json, logs); copy them to bench/results/ with the date and the GPU's name.
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
python3 - <<'PY' 2>&1 | tee "$OUT/env.txt"
import importlib, torch
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
for name in ("transformers", "peft", "trl", "datasets", "accelerate", "liger_kernel", "unsloth"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as err:  # noqa: BLE001
        print(name, "not importable:", type(err).__name__, str(err)[:200])
PY
python3 -c "
import sys; sys.path.insert(0, 'bench')
from pathlib import Path
from cuda_check import write_models
print(write_models(Path('$WORK')))" 2>&1 | tail -2
timeout 90 python3 bench/flex_check.py "$WORK/llama-1b-random" --rows 8 --max 2048 \
  --out "$OUT/flex-check-cuda-llama1b.json" 2>&1 | tee "$OUT/flex-check.log"
timeout 270 python3 bench/speed.py --model "$WORK/llama-1b-random" --methods lora --data varied --rows 1024 \
  --batch 32 --rounds 1 --precision bf16 --workdir "$WORK/speed-varied" \
  --trainers weitiao,weitiao+train.packed_attention=mask,baseline,baseline+liger,trl,unsloth \
  --out "$OUT/speed-cuda-llama1b-varied.json" 2>&1 | tee "$OUT/speed-varied.log"
timeout 120 python3 bench/speed.py --model "$WORK/llama-1b-random" --methods lora --data long --rows 64 \
  --batch 8 --rounds 1 --precision bf16 --workdir "$WORK/speed-long" --trainers weitiao,plain,plain+liger \
  --out "$OUT/speed-cuda-llama1b-long.json" 2>&1 | tee "$OUT/speed-long.log"
echo "done in ${SECONDS} s"
