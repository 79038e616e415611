"""Speed and memory side by side: weitiao, a plain transformers Trainer + peft baseline, and TRL's SFTTrainer.

    python bench/speed.py [--model smollm2-135m-instruct] [--methods lora,full] [--data demo,varied]
                          [--rows 64] [--batch 8] [--rounds 2] [--precision fp32,bf16] [--out FILE.json]

The same model, rows, method, seed, batch and number of optimizer steps (one epoch over `--rows` rows, so every
trainer trains on exactly the same examples) for three trainers, run in turn and interleaved (A B C A B C ...),
each in a fresh process so its peak memory is its own:
- `weitiao`: `weitiao train` at its defaults (padding-free batches, attended one example at a time on a CPU, the
  fused head-and-loss pass, and on a CPU under bf16 a LoRA run's frozen weights in bf16); a trainer named
  `weitiao+KEY=VALUE[+...]` is weitiao with those config overrides, a row of its own;
- `baseline`: transformers `Trainer` + peft at default settings, written here: the chat template through
  `apply_chat_template`, prompt tokens masked, padded batches (`DataCollatorForSeq2Seq`) in random order;
- `trl`: TRL `SFTTrainer` in its fastest documented configuration that keeps examples apart: prompt-completion
  rows (loss on the completion), `padding_free=True`, gradient checkpointing off;
- `baseline+liger`: the baseline with the weights in bf16 (under bf16) and transformers' `use_liger_kernel=True`
  (Liger's RMSNorm, SwiGLU, RoPE and fused linear cross-entropy; a CUDA GPU with liger-kernel installed);
- `plain` and `plain+liger`: the loop a user could write in 40 lines (../shared/gpu/lora_probe.py's): weights in
  the run's precision, peft LoRA, padded batches in file order, `model(**batch).loss`, AdamW with the same
  schedule; `+liger` after Liger's kernels are applied to the model;
- `unsloth`: unsloth's FastLanguageModel with its LoRA and TRL's SFTTrainer, where unsloth imports and runs; where
  it does not, the row says why (the error) instead of a number.
Method: LoRA r=16, alpha 32, no dropout, on all linear layers, or full fine-tuning (`--methods`). Data: the demo task
(count_list, 40-110 tokens a row), a high-variance version of it (each question behind 0-30 filler sentences:
about 40-400 tokens), and `long`: rows of about 2048 tokens, a one-line question and an answer of filler text, so
nearly every position is trained.

Per row of the table: trained tokens/s (label-bearing tokens) and all tokens/s (non-padding), each over the time
spent in training steps alone (batches, forward, backward, optimizer; `weitiao.training.callbacks.StepTimer`, the
same clock for all three), the peak memory of the process (CPU: peak RSS; CUDA: max allocated), the loss of the
trained model on 32 held-out rows computed here the same way for all three, and the ratios against the baseline
of the same round (median over rounds). Model FLOPs utilisation is measured against the matmul peak of this
machine measured at the start of the same run, with the FLOPs counted per example of T tokens, A of them labels:
    forward  F = 2 N_body T + 2 N_head A + 4 L d T(T+1)/2
             (N_body: the weights of the transformer blocks; N_head: the LM head, needed only at label positions;
              the last term is causal attention, QK^T and AV over each token's preceding context, L layers, width d)
    full     3 F                      (backward = 2x forward: activation and weight gradients)
    LoRA     2 F + 6 N_lora T         (backward for activations only; the adapters' own forward and backward)
Counted the same for every trainer, so an implementation that computes logits it does not need gets no credit.
The MFU ceiling printed after the table is the rate of the model's own decoder matmuls alone, at each dataset's
typical packed row, as a share of the peak, next to that of large square products back to back
(`decoder_matmul_share`): what the matmuls could reach with nothing else to do. The peak is the best single
product, measured at the start and again at the end of the run; the higher of the two is used.

A bf16 row runs only where bf16 is fast (CUDA, or a CPU with AMX); elsewhere it is skipped with the
measured bf16 and fp32 matmul rates, because emulated bf16 is many times slower than fp32 (`--force-bf16` runs it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from padding_free import write_data  # noqa: E402  (the same two datasets as bench/padding_free.py)

REPO = Path(__file__).resolve().parents[1]
TRAINERS = ("weitiao", "baseline", "trl")  # the default; also: baseline+liger, plain, plain+liger, unsloth
LONG_TOKENS = 2048  # the `long` dataset's row length
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LEARNING_RATE, WARMUP_RATIO, SEED, HELDOUT_ROWS = 1e-3, 0.05, 0, 32


# ---------------------------------------------------------------------------------------------------- the child
def chat_encode(tokenizer, messages: list[dict]) -> dict:
    """The plain recipe: render prompt and conversation with the tokenizer's chat template, mask the prompt."""
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert full[:len(prompt)] == prompt, "the chat template does not render the prompt as a prefix"
    return {"input_ids": full, "attention_mask": [1] * len(full),
            "labels": [-100] * len(prompt) + full[len(prompt):]}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_long(folder: Path, tokenizer_folder: str, rows: int, val_rows: int) -> Path:
    """`long`: rows of about LONG_TOKENS tokens (a short question, an answer of filler sentences cut to fit)."""
    from transformers import AutoTokenizer

    from padding_free import FILLER

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    words = (FILLER * (LONG_TOKENS // 4)).split()
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", rows), ("val", val_rows), ("test", 8)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i in range(count):
                question = [{"role": "user", "content": f"Write passage {name} {i}."}]
                budget = LONG_TOKENS - len(chat_encode(tokenizer, question + [{"role": "assistant",
                                                                               "content": ""}])["input_ids"])
                ids = tokenizer(" ".join(words[i % 7:]), add_special_tokens=False)["input_ids"][:budget]
                answer = tokenizer.decode(ids).strip()
                f.write(json.dumps({"messages": question + [{"role": "assistant", "content": answer}]}) + "\n")
    return folder


def scored_length(tokenizer, labels: list[int]) -> int:
    """How many label positions the held-out loss scores: the answer and its end-of-turn token, not whitespace
    the template writes after it (ChatML's newline after <|im_end|>). Generation stops at the end-of-turn token,
    so that newline is never produced; weitiao does not train on it, the plain recipe and TRL do, and scoring it
    would rank trainers by a token no user sees."""
    n = len(labels)
    while n > 0 and labels[n - 1] != -100 and not tokenizer.decode([labels[n - 1]]).strip():
        n -= 1
    return n


def heldout_loss(model, tokenizer, rows: list[dict], amp) -> dict:
    """Token-weighted cross-entropy over held-out rows, one row at a time (no padding): `answer` scores each
    answer through its end-of-turn token, `template` every label the plain recipe trains on."""
    import torch
    import torch.nn.functional as F

    model.eval()
    sums, count = {"answer": 0.0, "template": 0.0}, {"answer": 0, "template": 0}
    with torch.no_grad(), torch.autocast(model.device.type, dtype=amp, enabled=amp is not None):
        for row in rows:
            enc = chat_encode(tokenizer, row["messages"])
            ids = torch.tensor([enc["input_ids"]], device=model.device)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # (T-1, V)
            targets = torch.tensor(enc["labels"][1:], device=model.device)  # (T-1,)
            losses = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
            scored = scored_length(tokenizer, enc["labels"]) - 1  # label positions shift left by one
            for name, end in (("answer", scored), ("template", len(targets))):
                sums[name] += float(losses[:end].sum())
                count[name] += int((targets[:end] != -100).sum())
    return {name: sums[name] / count[name] for name in sums}


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")


def train_weitiao(spec: dict, work: Path):
    from weitiao.config import load_config
    from weitiao.workflows import sft

    method = {"name": "lora", "lora": {**LORA, "target_modules": ["all-linear"]}} if spec["method"] == "lora" \
        else {"name": "full"}
    cfg = {"model": {"name_or_path": spec["model"]},
           "data": {"format": "messages", "train": str(Path(spec["data"]) / "train.jsonl"),
                    "max_length": 2 * LONG_TOKENS},
           "method": method,
           "train": {"epochs": 1, "batch_size": spec["batch"], "learning_rate": LEARNING_RATE,
                     "warmup_ratio": WARMUP_RATIO, "logging_steps": 1, "precision": spec["precision"], "seed": SEED,
                     "save_total_limit": 1},
           "eval": {"metrics": [], "compare_base": False, "forgetting": False, "report": False},
           "output": {"dir": str(work / "run")}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    # a trainer named `weitiao+KEY=VALUE+...` runs weitiao with those config overrides (a variant's own row)
    overrides = spec["trainer"].split("+")[1:]
    result = sft.run(load_config(work / "config.yaml", overrides), overwrite=True)
    t = result.metrics["train"]
    return result.model, result.tokenizer, {
        "step_seconds": t["step_seconds"], "steps": t["steps"], "final_loss": t["final_loss"],
        "train_loss_mean": t["train_loss_mean"], "tokens": result.metrics["data"]["train_tokens"],
        "trained_tokens": result.metrics["data"]["train_trained_tokens"], "batches": t["batches"],
        "batch_counts": t.get("batch_counts"), "logits": t["logits"],
        "memory": result.metrics.get("memory")}  # the run's own estimate next to its measured peak


def _hf_args(spec: dict, work: Path, steps: int) -> dict:
    import torch

    return dict(output_dir=str(work / "out"), per_device_train_batch_size=spec["batch"], num_train_epochs=1,
                learning_rate=LEARNING_RATE, lr_scheduler_type="cosine",
                warmup_steps=math.ceil(WARMUP_RATIO * steps), logging_steps=1, seed=SEED, data_seed=SEED,
                bf16=spec["precision"] == "bf16", use_cpu=not torch.cuda.is_available(), report_to="none",
                save_strategy="no", disable_tqdm=True)


def _load(spec: dict, bf16_weights: bool = False):
    """The model (fp32 weights, as transformers loads them by default; `bf16_weights` under bf16, as
    LLaMA-Factory, unsloth and the plain loop load them) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["folder"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = bf16_weights and spec["precision"] == "bf16"
    model = AutoModelForCausalLM.from_pretrained(spec["folder"], dtype=torch.bfloat16 if bf16 else torch.float32)
    if torch.cuda.is_available():
        model = model.cuda()
    return model, tokenizer


def _finish(trainer, timer, tokens: int, trained: int) -> dict:
    history = trainer.state.log_history
    return {"step_seconds": round(timer.seconds, 4), "steps": trainer.state.global_step,
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            "train_loss_mean": round(next(h["train_loss"] for h in history if "train_loss" in h), 6),
            "tokens": tokens, "trained_tokens": trained}


def train_baseline(spec: dict, work: Path):
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from weitiao.training.callbacks import StepTimer

    liger = spec["trainer"] == "baseline+liger"  # bf16 weights and transformers' use_liger_kernel
    model, tokenizer = _load(spec, bf16_weights=liger)
    if spec["method"] == "lora":
        model = get_peft_model(model, lora_config())
    rows = [chat_encode(tokenizer, r["messages"]) for r in read_rows(Path(spec["data"]) / "train.jsonl")]
    timer = StepTimer()
    args = TrainingArguments(**_hf_args(spec, work, spec["steps"]), use_liger_kernel=liger)
    trainer = Trainer(model=model, args=args,
                      train_dataset=Dataset.from_list(rows), callbacks=[timer],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    trainer.train()
    return trainer.model, tokenizer, {
        **_finish(trainer, timer, sum(len(r["input_ids"]) for r in rows),
                  sum(sum(1 for x in r["labels"] if x != -100) for r in rows)),
        "batches": "padded", "logits": "liger_fused" if liger else "all_positions"}


def train_plain(spec: dict, work: Path):
    """The hand-written loop: padded batches in file order, the model's own loss, AdamW, the same schedule."""
    import torch
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, get_cosine_schedule_with_warmup

    model, tokenizer = _load(spec, bf16_weights=True)
    if spec["trainer"] == "plain+liger":
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    if spec["method"] == "lora":
        model = get_peft_model(model, lora_config())
    rows = [chat_encode(tokenizer, r["messages"]) for r in read_rows(Path(spec["data"]) / "train.jsonl")]
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE,
                                  fused=model.device.type == "cuda")
    steps = math.ceil(len(rows) / spec["batch"])
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * steps), steps)
    amp = spec["precision"] == "bf16" and next(model.parameters()).dtype == torch.float32  # fp32 weights on a CPU
    model.train()
    seconds, losses = 0.0, []
    for start in range(0, len(rows), spec["batch"]):
        batch = {k: v.to(model.device) for k, v in collate(rows[start:start + spec["batch"]]).items()}
        sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
        sync()
        began = time.perf_counter()
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        seconds += time.perf_counter() - began
        losses.append(loss.item())  # after the clock: the one host sync a logging loop makes
    return model, tokenizer, {
        "step_seconds": round(seconds, 4), "steps": len(losses), "final_loss": losses[-1],
        "train_loss_mean": round(sum(losses) / len(losses), 6), "tokens": sum(len(r["input_ids"]) for r in rows),
        "trained_tokens": sum(sum(1 for x in r["labels"] if x != -100) for r in rows), "batches": "padded",
        "logits": "liger_fused" if spec["trainer"] == "plain+liger" else "all_positions"}


def train_unsloth(spec: dict, work: Path):
    """unsloth's FastLanguageModel (bf16 weights, its own LoRA and kernels) under TRL's SFTTrainer, as its
    notebooks train."""
    import unsloth  # noqa: F401  (first: unsloth patches transformers and TRL as it is imported)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(spec["folder"], max_seq_length=2 * LONG_TOKENS,
                                                         dtype=None, load_in_4bit=False, local_files_only=True)
    model = FastLanguageModel.get_peft_model(
        model, r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return train_trl(spec, work, (model, tokenizer))


def train_trl(spec: dict, work: Path, loaded=None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from weitiao.training.callbacks import StepTimer

    model, tokenizer = loaded or _load(spec)
    rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
            for r in read_rows(Path(spec["data"]) / "train.jsonl")]
    timer = StepTimer()
    args = SFTConfig(**_hf_args(spec, work, spec["steps"]), padding_free=True, gradient_checkpointing=False,
                     max_length=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config() if spec["method"] == "lora" and not loaded else None,
                         callbacks=[timer])
    trainer.train()
    data = trainer.train_dataset
    return trainer.model, tokenizer, {
        **_finish(trainer, timer, sum(len(x) for x in data["input_ids"]),
                  sum(sum(1 for x in labels if x != -100) for labels in data["labels"])),
        "batches": "padding_free", "logits": "all_positions"}


def child(spec: dict) -> dict:
    import torch

    torch.manual_seed(SEED)
    trainer = spec["trainer"].split("+")[0]  # weitiao+KEY=VALUE...: a weitiao variant; baseline+liger, plain+liger
    work = Path(tempfile.mkdtemp(prefix=f"speed-{trainer}-", dir=spec["workdir"]))
    train = {"weitiao": train_weitiao, "baseline": train_baseline, "trl": train_trl, "plain": train_plain,
             "unsloth": train_unsloth}[trainer]
    try:
        model, tokenizer, out = train(spec, work)
    except Exception as err:  # noqa: BLE001 - a peer that cannot run here (unsloth, Liger): its row says why
        if trainer == "weitiao":
            raise
        return {"error": f"{type(err).__name__}: {str(err).strip()[:300]}"}
    out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if torch.cuda.is_available():
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
    amp = torch.bfloat16 if spec["precision"] == "bf16" else None
    rows = read_rows(Path(spec["data"]) / "val.jsonl")[:HELDOUT_ROWS]
    losses = heldout_loss(model, tokenizer, rows, amp)
    out["heldout_loss"], out["heldout_loss_template"] = round(losses["answer"], 6), round(losses["template"], 6)
    return out


# --------------------------------------------------------------------------------------------------- the parent
def matmul_peak(dtype_name: str, seconds: float = 2.0) -> float:
    """The best FLOP/s of square matmuls on this machine's default device and threads, in `dtype_name`."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n, limit = 256, (8192 if device == "cuda" else 2048)
    while True:  # grow the size while one product is quick, so an emulated dtype does not take minutes
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # untimed: the first product on a GPU also initialises cuBLAS (that alone took >0.05 s on an H200)
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if time.perf_counter() - t0 > 0.05 or n >= limit:
            break
        n *= 2
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def decoder_matmul_share(folder: str, dtype_name: str, tokens: int, seconds: float = 4.0) -> dict:
    """How fast this model's own decoder matmuls run alone, at rows of `tokens` tokens, and large square products
    back to back, measured in turn. One sweep is every linear layer's forward product (tokens x in) @ (in x out)
    in the model's order, each layer with its own weight as in the model (so a product does not find its weight in
    cache from the previous one); sweeps and runs of square products alternate, so both see the machine in the
    same state. Medians, where `matmul_peak` takes the best single product: on a shared 2-core Xeon the best
    2048x2048 bf16 product measured 661-2,031 GFLOP/s from run to run, while products back to back held 500-610.
    The decoder rate over the peak is a ceiling for the model FLOPs utilisation at that row length: a training
    step also pays for attention, norms, activations, casts and the optimizer."""
    import torch

    from weitiao.memory.shape import load_config_dict, model_shape

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    shape = model_shape(load_config_dict(folder))
    per_layer = [(d_in, d_out) for _, d_in, d_out, count in shape.linear_shapes for _ in range(count // shape.layers)]
    weights = [torch.randn(d_out, d_in, device=device, dtype=dtype) for _ in range(shape.layers)
               for d_in, d_out in per_layer]
    inputs = {d_in: torch.randn(tokens, d_in, device=device, dtype=dtype) for d_in, _ in per_layer}
    n = 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sweep_flops = sum(2 * tokens * w.shape[0] * w.shape[1] for w in weights)
    square_reps = max(1, round(sweep_flops / (2 * n ** 3)))  # about as many FLOPs as one sweep
    rates = {"decoder": [], "square": []}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates["decoder"]) < 3:
        for name in ("decoder", "square"):
            sync()
            t0 = time.perf_counter()
            if name == "decoder":
                for w in weights:
                    torch.nn.functional.linear(inputs[w.shape[1]], w)
            else:
                for _ in range(square_reps):
                    a @ b
            sync()
            flops = sweep_flops if name == "decoder" else square_reps * 2 * n ** 3
            rates[name].append(flops / (time.perf_counter() - t0))
    decoder, square = statistics.median(rates["decoder"]), statistics.median(rates["square"])
    return {"row_tokens": tokens, "decoder_flops_per_s": decoder, "square_flops_per_s": square,
            "share": decoder / square}


def flops_terms(folder: str) -> dict:
    """The FLOPs formula's parameter counts, from weitiao's config-only model shape (no weights loaded)."""
    from weitiao.memory.estimate import lora_params
    from weitiao.memory.shape import load_config_dict, model_shape

    shape = model_shape(load_config_dict(folder))
    return {"n_body": shape.params - shape.embedding_params - shape.head_params,  # tied head counted once, below
            "n_head": shape.vocab * shape.hidden,
            "n_lora": lora_params(shape, LORA["r"]),
            "layers": shape.layers, "attn_width": shape.heads * shape.head_dim, "total": shape.params}


def example_sizes(folder: str, data: Path) -> list[tuple[int, int]]:
    """(tokens, label positions) of each training row, encoded the plain recipe's way."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    for row in read_rows(data / "train.jsonl"):
        enc = chat_encode(tokenizer, row["messages"])
        out.append((len(enc["input_ids"]), sum(1 for x in enc["labels"][1:] if x != -100)))
    return out


def training_flops(sizes: list[tuple[int, int]], method: str, shape: dict) -> float:
    """Model FLOPs of one epoch over rows of these sizes (see the module docstring for the formula)."""
    flops = 0.0
    for t, a in sizes:
        forward = (2 * shape["n_body"] * t + 2 * shape["n_head"] * a
                   + 4 * shape["layers"] * shape["attn_width"] * t * (t + 1) / 2)
        flops += 3 * forward if method == "full" else 2 * forward + 6 * shape["n_lora"] * t
    return flops


def run_child(spec: dict) -> dict:
    started = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{spec['trainer']} {spec['method']} on {Path(spec['data']).name} failed ({proc.returncode}):\n"
                 f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    if "error" in out:
        print(f"  {spec['precision']} {Path(spec['data']).name} {spec['method']} {spec['trainer']}: could not run: "
              f"{out['error']}", flush=True)
        return out
    print(f"  {spec['precision']} {Path(spec['data']).name} {spec['method']} {spec['trainer']}: "
          f"{out['trained_tokens'] / out['step_seconds']:.1f} trained tok/s, peak {out['peak_bytes'] / 2**20:.0f} "
          f"MiB, held-out loss {out['heldout_loss']:.4f} (every template label: {out['heldout_loss_template']:.4f}) "
          f"({time.time() - started:.0f} s)", flush=True)
    return out


def machine() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def table(results: dict, datasets, methods, precisions, trainers, peaks: dict, flops: dict) -> list[str]:
    lines = [f"{'precision/data/method/trainer':<32}{'trained tok/s':>14}{'all tok/s':>10}{'x base':>8}"
             f"{'peak MiB':>10}{'x base':>8}{'held-out loss':>15}{'vs base':>9}{'MFU':>8}"]
    for precision in precisions:
        for data in datasets:
            for method in methods:
                base = results.get((precision, data, method, "baseline"))
                for trainer in trainers:
                    runs = [r for r in results[(precision, data, method, trainer)] if "error" not in r]
                    if not runs:
                        lines.append(f"{precision + '/' + data + '/' + method + '/' + trainer:<32}  could not run: "
                                     f"{results[(precision, data, method, trainer)][0]['error']}")
                        continue
                    speed = [r["trained_tokens"] / r["step_seconds"] for r in runs]
                    row = (f"{precision + '/' + data + '/' + method + '/' + trainer:<32}"
                           f"{statistics.median(speed):>14.1f}"
                           f"{statistics.median(r['tokens'] / r['step_seconds'] for r in runs):>10.1f}")
                    if base:
                        x_speed = statistics.median(
                            (r["trained_tokens"] / r["step_seconds"]) / (b["trained_tokens"] / b["step_seconds"])
                            for r, b in zip(runs, base))
                        x_mem = statistics.median(r["peak_bytes"] / b["peak_bytes"] for r, b in zip(runs, base))
                        x_loss = runs[-1]["heldout_loss"] / base[-1]["heldout_loss"] - 1
                    mfu = statistics.median(flops[(data, method)] / r["step_seconds"] for r in runs) / peaks[precision]
                    row += (f"{x_speed if base else float('nan'):>7.2f}x"
                            f"{statistics.median(r['peak_bytes'] for r in runs) / 2**20:>10.0f}"
                            f"{x_mem if base else float('nan'):>7.2f}x{runs[-1]['heldout_loss']:>15.4f}"
                            f"{x_loss if base else float('nan'):>+8.1%} {mfu:>7.1%}")
                    lines.append(row)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a bundled name or a local model folder")
    parser.add_argument("--methods", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--data", default="demo,varied", help="comma-separated: demo, varied, long")
    parser.add_argument("--rows", type=int, default=64, help="training rows (one epoch)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (ratios: median)")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--force-bf16", action="store_true", help="run bf16 rows even where bf16 is emulated")
    parser.add_argument("--trainers", default=",".join(TRAINERS),
                        help="comma-separated, run in this order; weitiao+KEY=VALUE[+...] adds a weitiao variant")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="also write every measurement to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    from weitiao.models.loading import local_folder, resolve_source
    from weitiao.models.precision import fast_bf16

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = local_folder(resolve_source(args.model))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="speed-"))
    work.mkdir(parents=True, exist_ok=True)
    precisions, trainers = args.precision.split(","), args.trainers.split(",")
    methods, data_names = args.methods.split(","), args.data.split(",")
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    print(f"machine: {machine()}\nmatmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 "
          f"{peaks['bf16'] / 1e9:.1f} GFLOP/s (measured now)")
    if "bf16" in precisions and not fast_bf16(device) and not args.force_bf16:
        precisions.remove("bf16")
        print("bf16 rows skipped: bf16 is slower than fp32 on this machine (no AMX), "
              f"{peaks['fp32'] / peaks['bf16']:.0f}x slower than fp32 in the matmul above; --force-bf16 runs them")
    # val.jsonl: the held-out rows, of the same kind and none trained on (the demo's splits share no combination)
    datasets = {name: write_long(work / name, folder, args.rows, HELDOUT_ROWS) if name == "long"
                else write_data(work / name, name == "varied", args.rows, val_rows=HELDOUT_ROWS)
                for name in data_names}
    shape = flops_terms(folder)
    sizes = {d: example_sizes(folder, path) for d, path in datasets.items()}
    flops = {(d, m): training_flops(sizes[d], m, shape) for d in datasets for m in methods}
    steps = math.ceil(args.rows / args.batch)
    # the matmul ceiling at each dataset's typical packed row: a batch's tokens, rounded up to 64 as weitiao does
    row_tokens = {d: int(statistics.median(64 * math.ceil(sum(t for t, _ in sizes[d][i:i + args.batch]) / 64)
                                           for i in range(0, len(sizes[d]), args.batch))) for d in datasets}
    ceilings = {(d, p): decoder_matmul_share(folder, p, row_tokens[d]) for d in datasets for p in precisions}
    for (d, p), c in ceilings.items():
        print(f"{p} {d}: this model's decoder matmuls alone, rows of {c['row_tokens']} tokens: "
              f"{c['decoder_flops_per_s'] / 1e9:.1f} GFLOP/s; 2048x2048 products back to back, in turn with them: "
              f"{c['square_flops_per_s'] / 1e9:.1f} GFLOP/s")
    print(f"model {args.model}: {shape['total'] / 1e6:.1f}M parameters; one epoch of {args.rows} rows in batches of "
          f"{args.batch} ({steps} optimizer steps); LoRA r={LORA['r']} all-linear ({shape['n_lora'] / 1e6:.2f}M); "
          f"{args.rounds} round(s)")
    results: dict = {}
    for _ in range(args.rounds):
        for precision in precisions:
            for data, path in datasets.items():
                for method in methods:
                    for trainer in trainers:
                        spec = {"trainer": trainer, "method": method, "data": str(path), "model": args.model,
                                "folder": folder, "batch": args.batch, "precision": precision, "steps": steps,
                                "workdir": str(work)}
                        results.setdefault((precision, data, method, trainer), []).append(run_child(spec))
    # the peak again, now: on a shared machine it moves between minutes, and MFU is taken against the higher
    peaks_end = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    print(f"matmul peak at the end: fp32 {peaks_end['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks_end['bf16'] / 1e9:.1f} "
          "GFLOP/s; MFU is against the higher of the two measurements")
    peaks_start, peaks = peaks, {p: max(peaks[p], peaks_end[p]) for p in peaks}
    lines = table(results, list(datasets), methods, precisions, trainers, peaks, flops)
    print("\n" + "\n".join(lines))
    for (d, p), c in ceilings.items():
        print(f"MFU ceiling, {p}/{d}: the model's decoder matmuls alone, at rows of {c['row_tokens']} tokens, ran at "
              f"{100 * c['decoder_flops_per_s'] / peaks[p]:.0f}% of the {p} peak; 2048x2048 products back to back "
              f"at {100 * c['square_flops_per_s'] / peaks[p]:.0f}%")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"machine": machine(), "matmul_peak_flops": peaks,
             "matmul_peak_flops_measured": {"start": peaks_start, "end": peaks_end},
             "args": {k: v for k, v in vars(args).items() if k != "child"},
             "flops": {f"{d}/{m}": v for (d, m), v in flops.items()}, "table": lines,
             "decoder_matmul_share": {f"{p}/{d}": c for (d, p), c in ceilings.items()},
             "runs": [{"precision": k[0], "data": k[1], "method": k[2], "trainer": k[3], "rounds": v}
                      for k, v in results.items()]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
