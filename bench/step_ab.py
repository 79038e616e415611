"""Two versions of the same training step side by side, in one process, on the same batches and weights.

    python bench/step_ab.py [--model smollm2-135m-instruct] [--data demo|varied] [--batches 6] [--rounds 3]
                            [--variants casts,compile] [--out FILE.json]

The step is weitiao's bf16 LoRA step on a CPU with AMX (or a GPU): bf16 base weights, LoRA r=16 on all linear
layers (fp32 adapters), bf16 autocast, padding-free rows of 8 examples rounded to 64 tokens, one attention call
per example, and the fused head-and-loss pass; forward and backward, no optimizer step, so every round sees the
same weights and the two versions' losses can be compared batch by batch. A variant and its baseline alternate
batch by batch (A B A B ...), so the machine's slow phases hit both; the ratio is of the median step times.

Variants (each is a default or a config switch of weitiao, and its opposite):
- `casts`: peft's cast of every LoRA layer's input to the adapters' fp32, which autocast casts straight back
  (baseline), against skipping that round trip (weitiao's default; methods.lora.autocast_input_casts_skipped);
- `compile`: eager decoder layers (baseline) against `train.compile` (each decoder layer compiled, inductor). The
  compilation itself is timed apart: the compiled version's first pass over the batches.

Prints, per variant: the median step seconds of each version, the ratio, the largest relative difference of the
two versions' losses on the same batch, and for `compile` the compilation's seconds and after how many steps the
faster steps pay for it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from padding_free import write_data  # noqa: E402  (the same two datasets as bench/speed.py)
from speed import LORA, chat_encode, read_rows  # noqa: E402


def build(model_name: str):
    import torch
    from peft import LoraConfig, get_peft_model

    from weitiao.models.loading import load_model, load_tokenizer, local_folder, resolve_source

    folder = local_folder(resolve_source(model_name))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(folder, torch.bfloat16, device)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    return model, load_tokenizer(folder), device


def batches(tokenizer, data: Path, n: int, device: str) -> list[dict]:
    from weitiao.data.dataset import PaddingFreeCollator
    from weitiao.training.fused_loss import NoLogitsCollator

    collate = NoLogitsCollator(PaddingFreeCollator(tokenizer.pad_token_id or 0, 64))
    rows = [chat_encode(tokenizer, r["messages"]) for r in read_rows(data / "train.jsonl")]
    return [{k: v.to(device) if hasattr(v, "to") else v for k, v in collate(rows[i * 8:(i + 1) * 8]).items()}
            for i in range(n)]


def step(model, loss_fn, batch: dict, device: str) -> tuple[float, float]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model.zero_grad(set_to_none=True)
    sync()
    t0 = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16):
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        loss = loss_fn(outputs, batch["labels"])
    loss.backward()
    sync()
    return time.perf_counter() - t0, loss.item()


def compare(model, loss_fn, data: list[dict], device: str, rounds: int, baseline, variant) -> dict:
    """baseline/variant: context managers (no arguments) that set the model up as that version."""
    times, losses = {"baseline": [], "variant": []}, {"baseline": [], "variant": []}
    for _ in range(rounds):
        for batch in data:
            for name, ctx in (("baseline", baseline), ("variant", variant)):
                with ctx():
                    seconds, loss = step(model, loss_fn, batch, device)
                times[name].append(seconds)
                losses[name].append(loss)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_step_s": {k: round(v, 4) for k, v in med.items()},
            "speedup": round(med["baseline"] / med["variant"], 3),
            "max_rel_loss_diff": max(abs(a - b) / abs(a) for a, b in zip(losses["baseline"], losses["variant"])),
            "steps_each": len(times["baseline"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="demo", choices=["demo", "varied"])
    parser.add_argument("--batches", type=int, default=6, help="batches of 8 rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="casts,compile")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch
    from peft.helpers import disable_input_dtype_casting

    from weitiao.methods import unwrapped
    from weitiao.training.fused_loss import FusedLinearLoss
    from weitiao.training.segment_attention import training_attention

    torch.manual_seed(0)
    model, tokenizer, device = build(args.model)
    data = batches(tokenizer, write_data(Path(tempfile.mkdtemp(prefix="step-ab-")) / args.data,
                                         args.data == "varied", 8 * args.batches, val_rows=0), args.batches, device)
    loss_fn = FusedLinearLoss(model)
    tokens = [int(b["input_ids"].shape[1]) for b in data]
    print(f"{args.model}, {device}, bf16 LoRA r={LORA['r']} all-linear; {len(data)} batches of 8 {args.data} rows, "
          f"{min(tokens)}-{max(tokens)} tokens a row; {args.rounds} rounds")
    no_casts = lambda: disable_input_dtype_casting(model)  # noqa: E731  (weitiao's default, the casts skipped)
    results = {}
    with training_attention(unwrapped(model), "segments" if device == "cpu" else None):
        for name in args.variants.split(","):
            if name == "casts":
                results[name] = compare(model, loss_fn, data, device, args.rounds,
                                        contextlib.nullcontext, no_casts)
            elif name == "compile":
                with _compiled(model):
                    t0 = time.perf_counter()
                    for batch in data:
                        step(model, loss_fn, batch, device)
                    warmup = time.perf_counter() - t0
                results[name] = compare(model, loss_fn, data, device, args.rounds, no_casts,
                                        lambda: _compiled(model))
                eager, fast = results[name]["median_step_s"]["baseline"], results[name]["median_step_s"]["variant"]
                results[name]["first_pass_s"] = round(warmup, 1)
                # the first pass runs each batch once, compiling; eagerly it would have taken len(data) x eager
                extra = warmup - len(data) * fast
                results[name]["pays_after_steps"] = round(extra / (eager - fast)) if eager > fast else None
            else:
                parser.error(f"unknown variant {name!r}: casts, compile")
            r = results[name]
            print(f"{name}: baseline {r['median_step_s']['baseline']:.3f} s/step, variant "
                  f"{r['median_step_s']['variant']:.3f} s/step: {r['speedup']:.2f}x; losses differ by at most "
                  f"{100 * r['max_rel_loss_diff']:.3f}%"
                  + (f"; first pass {r['first_pass_s']} s (compiling), pays after about {r['pays_after_steps']} "
                     "steps" if name == "compile" else ""), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "tokens_per_row": tokens,
                                              "torch": torch.__version__, "results": results}, indent=1))
    return 0


@contextlib.contextmanager
def _compiled(model):
    """The compiled version: the casts skipped as in the baseline, and the layers compiled (traced in the first
    pass; entering again costs nothing, the compiled code is cached per code object)."""
    from peft.helpers import disable_input_dtype_casting

    from weitiao.methods import unwrapped
    from weitiao.training.compile import compiled_layers

    with disable_input_dtype_casting(model), compiled_layers(unwrapped(model), True):
        yield


if __name__ == "__main__":
    sys.exit(main())
