"""One prepared run on a CUDA machine: does weitiao work there unchanged, and what do speed and memory look like.

    python bench/cuda_check.py --out DIR [--budget-s 420]

Sections (each independent; a failure is recorded with its traceback and the next one runs):
  env        torch/CUDA/GPU, bitsandbytes' CUDA 4-bit round trip
  matmul     the bf16 matmul peak of this GPU (8192^3, mean of 10 after 3 warm-ups)
  decode     weitiao's cached virtual-token decoding == the uncached reference, on CUDA (tiny Llama/GLM/GLM-4)
  cli        `weitiao train` of examples/{qlora,ptuning-v2,quickstart}.yaml and 8-bit QLoRA on CUDA, then
             `weitiao eval RUN` reloading the 4-bit QLoRA run (same metrics expected)
  grid       measured peak CUDA memory and tokens/s of a manual training step (bf16 autocast, AdamW) per method x
             sequence length x batch, for a SmolLM2-135M-shaped and a Llama-3.2-1B-shaped model (random weights),
             as data for the memory estimator's CUDA constants

Models have random weights built from the configs (SmolLM2's own config.json and tokenizer travel with the
script; nothing is downloaded). Speed and memory do not depend on the weights' values; task accuracy does, so the
cli section checks that runs finish, save and reload, not their accuracy. Results go to DIR/cuda_check.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = time.time()
RESULTS: dict = {"sections": {}}


def save(out: Path) -> None:
    (out / "cuda_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def section(name: str, out: Path, budget_s: float):
    def wrap(fn):
        left = budget_s - (time.time() - START)
        if left < 20:
            RESULTS["sections"][name] = {"skipped": f"time budget used up ({budget_s:.0f} s)"}
            save(out)
            return fn
        t0 = time.time()
        print(f"== {name} (at {t0 - START:.0f} s)", flush=True)
        try:
            RESULTS["sections"][name] = {"result": fn(), "seconds": round(time.time() - t0, 1)}
        except Exception:  # noqa: BLE001 - record and go on to the next section
            RESULTS["sections"][name] = {"error": traceback.format_exc()[-4000:], "seconds": round(time.time() - t0, 1)}
            print(RESULTS["sections"][name]["error"], flush=True)
        save(out)
        return fn
    return wrap


def env():
    import torch

    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    q, state = F.quantize_4bit(x, quant_type="nf4")
    err = (F.dequantize_4bit(q, state) - x).abs().mean().item()
    import peft
    import transformers

    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            "bitsandbytes": bnb.__version__, "nf4_roundtrip_mean_abs_err": err,
            "transformers": transformers.__version__, "peft": peft.__version__}


def matmul():
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.time() - t0) / 10
    return {"bf16_tflops": round(2 * n**3 / seconds / 1e12, 1)}


def decode():
    import torch
    from peft import PrefixTuningConfig, PromptEncoderConfig, TaskType, get_peft_model

    from weitiao.evaluation.virtual_tokens import generate_ids, reference_ids
    from weitiao.testing import build_model, build_tokenizer

    tok = build_tokenizer()
    prompts = ["<|im_start|>user\nList three fruits<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"]
    out = {}
    for arch in ("llama", "glm", "glm4"):
        for method, make in (("prefix", lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5,
                                                                   prefix_projection=True, encoder_hidden_size=32)),
                             ("ptuning", lambda: PromptEncoderConfig(task_type=TaskType.CAUSAL_LM,
                                                                     num_virtual_tokens=5, encoder_hidden_size=32))):
            torch.manual_seed(0)
            model = get_peft_model(build_model(len(tok), arch=arch), make()).cuda().eval()
            with torch.no_grad():
                for p in model.parameters():
                    if p.requires_grad:
                        p.mul_(20.0)
            tok.padding_side = "left"
            batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
            cached = generate_ids(model, batch["input_ids"], batch["attention_mask"], 12, (2,), 0)
            same = True
            for i, prompt in enumerate(prompts):
                ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].cuda()
                ref = reference_ids(model, ids, 12, (2,))[0, ids.shape[1]:]
                width = batch["input_ids"].shape[1]
                same &= cached[i, width: width + len(ref)].tolist() == ref.tolist()
            out[f"{arch}/{method}"] = same
    return out


def write_models(work: Path, device: str = "cuda") -> dict:
    """A SmolLM2-135M-shaped and a Llama-3.2-1B-shaped model with random weights, saved in bf16."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    tokenizer_dir = REPO / ".gpu" / "smollm2-config"
    folders = {}
    small = AutoConfig.from_pretrained(tokenizer_dir)
    big = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=8192,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                      rope_parameters={"rope_theta": 500000.0, "rope_type": "default"})
    for name, config in (("smollm2-135m-random", small), ("llama-1b-random", big)):
        folder = work / name
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(folder)
        del model
        for f in tokenizer_dir.iterdir():
            if f.name != "config.json":
                shutil.copy(f, folder / f.name)
        folders[name] = folder
    torch.cuda.empty_cache()
    return folders


def cli(folders: dict, work: Path, out: Path):
    runs = {
        "qlora-4bit": ("qlora.yaml", []),
        "qlora-8bit": ("qlora.yaml", ["method.qlora.bits=8", "train.max_steps=20", "eval.compare_base=false"]),
        "lora-bf16": ("quickstart.yaml", ["eval.compare_base=false"]),
        "ptuning-v2": ("ptuning-v2.yaml", ["eval.compare_base=false"]),
    }
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = {}
    for name, (example, extra) in runs.items():
        run_dir = work / "runs" / name
        cmd = [sys.executable, "-m", "weitiao", "train", str(REPO / "examples" / example),
               f"model.name_or_path={folders['smollm2-135m-random']}", f"output.dir={run_dir}", *extra]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO / "examples", timeout=300)
        (out / f"train-{name}.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
        entry = {"returncode": proc.returncode, "wall_s": round(time.time() - t0, 1)}
        if proc.returncode == 0:
            m = json.loads((run_dir / "metrics.json").read_text())
            entry.update(steps=m["train"]["steps"], train_runtime_s=m["train"]["runtime_s"],
                         tokens_per_s=m["train"]["tokens_per_s"], memory=m["memory"],
                         base_weights=m["base_weights"], params=m["params"], test=m["test"])
        result[name] = entry
        print(name, json.dumps(entry)[:600], flush=True)
    if result.get("qlora-4bit", {}).get("returncode") == 0:
        eval_out = work / "qlora-4bit-eval.json"
        proc = subprocess.run([sys.executable, "-m", "weitiao", "eval", str(work / "runs" / "qlora-4bit"),
                               "--out", str(eval_out)], capture_output=True, text=True, env=env, timeout=300)
        result["qlora-4bit-reload"] = {"returncode": proc.returncode,
                                       "metrics": json.loads(eval_out.read_text())["metrics"]
                                       if proc.returncode == 0 else proc.stderr[-3000:]}
    return result


def grid(folders: dict, budget_s: float):
    """Peak memory and tokens/s of one training step per setting; 2 warm-up steps, then 3 timed ones."""
    import torch

    from weitiao.config import MethodConfig
    from weitiao.methods.lora import LoraSettings
    from weitiao.methods.qlora import QLoraSettings
    from weitiao.methods import apply_method, count_parameters, load_kwargs
    from weitiao.models.loading import load_model

    settings = [("llama-1b-random", m, s, b) for m in ("lora", "qlora", "full")
                for s, b in ((512, 4), (2048, 4), (2048, 1))]
    settings += [("smollm2-135m-random", m, s, b) for m in ("lora", "qlora", "full") for s, b in ((512, 8), (2048, 4))]
    rows = []
    for model_name, method, seq, batch in settings:
        if time.time() - START > budget_s - 25:
            rows.append({"model": model_name, "method": method, "seq": seq, "batch": batch, "skipped": "budget"})
            continue
        cfg = MethodConfig(name=method, lora=LoraSettings(r=16, alpha=32), qlora=QLoraSettings(bits=4))
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        row = {"model": model_name, "method": method, "seq": seq, "batch": batch}
        try:
            model = load_model(str(folders[model_name]), torch.bfloat16, "cuda", extra=load_kwargs(cfg, "cuda"))
            model = apply_method(model, cfg)
            model.config.use_cache = False
            weights_bytes = torch.cuda.memory_allocated()
            trainable, total = count_parameters(model)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
            ids = torch.randint(0, 49152, (batch, seq), device="cuda")
            times = []
            for step in range(5):
                torch.cuda.synchronize()
                t0 = time.time()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                if step >= 2:
                    times.append(time.time() - t0)
            step_s = sum(times) / len(times)
            row.update(trainable=trainable, total=total, weights_bytes=weights_bytes,
                       max_allocated_bytes=torch.cuda.max_memory_allocated(),
                       max_reserved_bytes=torch.cuda.max_memory_reserved(), step_s=round(step_s, 4),
                       tokens_per_s=round(batch * seq / step_s, 1))
        except Exception as err:  # noqa: BLE001 - an OOM or a failure is a result too
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        finally:
            model = optimizer = params = loss = None
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget-s", type=float, default=420)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/weitiao-cuda")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WEITIAO_CACHE", str(work / "cache"))
    section("env", out, args.budget_s)(env)
    section("matmul", out, args.budget_s)(matmul)
    section("decode", out, args.budget_s)(decode)
    folders: dict = {}
    section("models", out, args.budget_s)(lambda: {k: str(v) for k, v in folders.update(write_models(work)) or
                                                   folders.items()})
    if folders:
        section("cli", out, args.budget_s)(lambda: cli(folders, work, out))
        section("grid", out, args.budget_s)(lambda: grid(folders, args.budget_s))
    RESULTS["total_s"] = round(time.time() - START, 1)
    save(out)
    print(f"done in {RESULTS['total_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
