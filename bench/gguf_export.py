"""GGUF export of a finished run, read back by two independent readers, answering the run's test rows.

    python bench/gguf_export.py RUN [--quants f16,q8_0] [--llama-cpp NODE_MODULES]

For each quantization: `weitiao export RUN --format gguf --quant Q`, then the run's test prompts (predictions.jsonl)
answered greedily by
- transformers' own GGUF loader and de-quantizer (fp32 compute, batched generate, the file's chat template), and
- llama.cpp itself, through node-llama-cpp's prebuilt binary, when --llama-cpp names a node_modules folder that
  holds it (`npm i --prefix DIR -E node-llama-cpp@3.21.1`; llama-cpp-python has no wheel on the registry and its
  source build takes longer than the test suite). The prompt is rendered with the file's own chat template and
  tokenized by llama.cpp with special tokens parsed; greedy decoding with no repeat penalty; generation stops on
  the Modelfile's stop strings.

Each reader's answers are compared with the run's own (`tuned` in predictions.jsonl): the share that are identical,
and the count accuracy (count_list) against the run's. Writes bench/results/gguf-export-cpu.json with the machine,
date and commit.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.methods import machine  # noqa: E402

LLAMA_CPP_SCRIPT = r"""
import fs from "node:fs";
const [,, modules, modelPath, stopsJson] = process.argv;
const {getLlama, LlamaCompletion} = await import(modules + "/node-llama-cpp/dist/index.js");
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 512, threads: Number(process.env.THREADS || 1)});
const completion = new LlamaCompletion({contextSequence: context.getSequence()});
for (const prompt of JSON.parse(fs.readFileSync(0, "utf8"))) {
  // the prompt's special tokens (<|im_start|>, ...) parsed as such: a string input would be tokenized as plain
  // text; greedy, as weitiao decodes: node-llama-cpp applies a repeat penalty unless told not to
  const tokens = model.tokenize(prompt, true);
  const text = await completion.generateCompletion(tokens, {maxTokens: 96, temperature: 0, repeatPenalty: false,
                                                            customStopTriggers: JSON.parse(stopsJson)});
  console.log(JSON.stringify(text));
}
"""


def weitiao(*args) -> None:
    subprocess.run([sys.executable, "-m", "weitiao", *map(str, args)], check=True)


def transformers_answers(folder: Path, name: str, questions: list[str]) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weitiao.testing import plain_greedy_answers

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return plain_greedy_answers(model, tok, questions, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def llama_cpp_answers(modules: Path, model: Path, prompts: list[str], stops: list[str]) -> list[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".mjs", delete=False) as f:
        f.write(LLAMA_CPP_SCRIPT)
    proc = subprocess.run(["node", f.name, str(modules.resolve()), str(model), json.dumps(stops)],
                          input=json.dumps(prompts), capture_output=True, text=True, check=False)
    os.unlink(f.name)
    if proc.returncode != 0:
        raise SystemExit(f"llama.cpp (node-llama-cpp) failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line).strip() for line in proc.stdout.splitlines() if line.startswith('"')]


def score(answers: list[str], rows: list[dict]) -> dict:
    from weitiao.evaluation.metrics import count_list

    return {"rows": len(rows),
            "identical_to_run": round(sum(a == r["tuned"] for a, r in zip(answers, rows)) / len(rows), 4),
            "count_list": round(sum(count_list(a, r["reference"]) for a, r in zip(answers, rows)) / len(rows), 4),
            "examples": [{"prompt": r["prompt"], "run": r["tuned"], "gguf": a}
                         for a, r in zip(answers, rows) if a != r["tuned"]][:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--quants", default="f16,q8_0")
    parser.add_argument("--llama-cpp", type=Path, help="a node_modules folder holding node-llama-cpp")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "weitiao-gguf-bench")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in (args.run / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((args.run / "metrics.json").read_text())
    started = time.strftime("%Y-%m-%d")
    results = []
    for quant in args.quants.split(","):
        out = args.workdir / quant
        began = time.perf_counter()
        weitiao("export", args.run, "--out", out, "--format", "gguf", "--quant", quant, "--overwrite")
        summary = json.loads((out / "weitiao_export.json").read_text())
        row = {"quant": quant, "bytes": summary["bytes"], "export_s": round(time.perf_counter() - began, 1),
               "logit_check": summary["logit_check"]}
        tok = AutoTokenizer.from_pretrained(out, gguf_file=summary["file"])
        prompts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                           tokenize=False) for r in rows]
        row["transformers"] = score(transformers_answers(out, summary["file"], [r["prompt"] for r in rows]), rows)
        if args.llama_cpp:
            row["llama_cpp"] = score(llama_cpp_answers(args.llama_cpp, out / summary["file"], prompts,
                                                       summary["stops"]), rows)
        print(json.dumps({k: v for k, v in row.items()}, indent=1)[:2000])
        results.append(row)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    result = {"machine": machine(), "date": started, "commit": commit, "run": str(args.run),
              "run_count_list": metrics["test"]["tuned"]["count_list"], "results": results}
    path = REPO / "bench" / "results" / "gguf-export-cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
