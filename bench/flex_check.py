"""FlexAttention on packed rows against the padded batch, on the device at hand: loss, gradients and step time.

    python bench/flex_check.py MODEL_DIR [--rows 8] [--min 64] [--max 2048] [--out FILE.json]

One batch of `--rows` examples of random lengths in [--min, --max] (random tokens, every position after the first
trained), run three ways on the same model (bf16 weights on a GPU, fp32 on a CPU): padded under sdpa's causal mask,
packed into one row under sdpa's block-diagonal mask (`mask`), and packed under weitiao_flex (`flex`, the document
mask; training.flex_attention), and on a CPU also weitiao_segments. Prints the loss of each, the largest gradient
difference from the padded batch relative to the largest gradient (on a CPU torch has no FlexAttention backward:
the loss only), and the median time of a forward and backward after warm-up. What tests/data/test_dataset.py
checks on the tiny model, here on a real shape and on a GPU (bench/gpu_session.sh).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def batches(vocab: int, rows: int, low: int, high: int, pad: int):
    from weitiao.data.dataset import PadCollator, PaddingFreeCollator

    rng = random.Random(0)
    examples = []
    for _ in range(rows):
        ids = [rng.randrange(3, vocab) for _ in range(rng.randint(low, high))]
        examples.append({"input_ids": ids, "labels": [-100] + ids[1:]})
    return PadCollator(pad)(examples), PaddingFreeCollator(pad, 64)(examples)


def measure(model, batch, attention, backward: bool, repeats: int = 5) -> dict:
    import torch

    from weitiao.training.segment_attention import training_attention

    device = next(model.parameters()).device
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, loss, grads = [], None, None
    with training_attention(model, attention), torch.set_grad_enabled(backward):
        for i in range(repeats + 2):
            model.zero_grad(set_to_none=True)
            sync()
            start = time.perf_counter()
            out = model(**batch)
            if backward:
                out.loss.backward()
            sync()
            if i >= 2:
                times.append(time.perf_counter() - start)
            loss = float(out.loss.detach())
    if backward:
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    return {"loss": loss, "seconds": statistics.median(times), "grads": grads}


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--min", type=int, default=64)
    parser.add_argument("--max", type=int, default=2048)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa")
    model = model.to("cuda" if cuda else "cpu").train()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    padded, packed = batches(model.config.vocab_size, args.rows, args.min, args.max, pad)
    ways = [("padded", padded, None), ("mask", packed, None), ("flex", packed, "flex")]
    if not cuda:
        ways.append(("segments", packed, "segments"))
    results = {name: measure(model, batch, attention, backward=cuda or attention != "flex")
               for name, batch, attention in ways}
    reference = results["padded"]["grads"]
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "rows": args.rows, "tokens": int(packed["input_ids"].shape[1]), "ways": {}}
    for name, r in results.items():
        entry = {"loss": round(r["loss"], 6), "step_s": round(r["seconds"], 5)}
        if r["grads"] is not None and name != "padded":
            entry["grad_max_diff_rel"] = float((r["grads"] - reference).abs().max() / reference.abs().max())
        report["ways"][name] = entry
        print(f"{name:>9}: loss {entry['loss']:.6f}, {1000 * entry['step_s']:.1f} ms a "
              f"{'forward+backward' if r['grads'] is not None else 'forward'}"
              + (f", gradients within {entry['grad_max_diff_rel']:.2e} of the padded batch's (relative)"
                 if "grad_max_diff_rel" in entry else ""), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
