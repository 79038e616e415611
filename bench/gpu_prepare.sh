#!/usr/bin/env bash
# Makes, on this (networked, CPU) machine, what bench/gpu_session.sh carries to a lent GPU machine with no network:
#   .whl/                  wheels the GPU image lacks (no torch: the image brings its CUDA build)
#   .gpu/smollm2-config/   the tokenizer and config of the cached SmolLM2 conversion (no weights)
# bitsandbytes (QLoRA) is not carried: its wheel alone is 43 MB of the 64 MiB a call carries.
# Both are git-ignored (.git/info/exclude) and named in the device call's `carry`: [".whl", ".gpu"].
set -eu
cd "$(dirname "$0")/.."
grep -qx ".whl/" .git/info/exclude 2>/dev/null || printf '.whl/\n.gpu/\n' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl .gpu
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
  -d .whl transformers==5.25.0 peft==0.21.2 trl==1.16.0 accelerate datasets==4.8.0 dill==0.4.1 \
  multiprocess==0.70.19 gguf==0.19.0 datasketch==2.0.0 liger-kernel==0.8.5 unsloth unsloth_zoo
folder=$(.venv/bin/python -c "
from weitiao.models.loading import local_folder, resolve_source
print(local_folder(resolve_source('smollm2-135m-instruct'), log=lambda _: None))")
rm -rf .gpu/smollm2-config && mkdir -p .gpu/smollm2-config
find "$folder" -maxdepth 1 -type f ! -name "*.safetensors" -exec cp {} .gpu/smollm2-config/ \;
du -sh .whl .gpu
