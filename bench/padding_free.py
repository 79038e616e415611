"""Padding-free batches against padded ones, and label-position logits, side by side in one process: speed and
final loss.

    python bench/padding_free.py [--model smollm2-135m-instruct] [--rows 128] [--rounds 1] [--batch 8]

LoRA r=16 on all linear layers, the same seed, rows and batch for every variant: one epoch over `--rows` training
rows, so every variant trains on exactly the same tokens. Two datasets: the demo task (count_list, answers of 1-10
lines) and a high-variance version of it (each question behind 0-30 filler sentences, so lengths range from about
40 to 400 tokens). Variants, run in turn A B C A B C ...:
- padded: padded batches, length-grouped (weitiao's default before padding-free);
- padded_random: padded batches in random order (transformers' default);
- padding_free: `train.padding_free` on: one row per batch, no padding, wherever its cost model finds that
  cheaper than padding (before that cost model existed, every batch: the figures in docs/benchmarks/speed.md);
- padding_free+label_logits: and the LM head and loss only at positions that predict a trained token
  (train.logits_at_labels_only). The variants above compute every position's logits;
- padding_free+fused_loss: and the head and loss fused, chunk by chunk, at trained tokens (weitiao's default:
  train.fused_loss).
Prints, per dataset and variant: trained tokens/s (label tokens) and all tokens/s (non-padding), each round's
ratio against the first variant (`padded` by default; `--variants` picks and orders them), the final training
loss, and the peak RSS of the training phase (the process's high-water mark is reset before each run's training).
Ratios come from runs made next to each other.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

OFF = {"logits_at_labels_only": False, "fused_loss": False}
VARIANTS = {"padded": {"padding_free": False, "group_by_length": True, **OFF},
            "padded_random": {"padding_free": False, "group_by_length": False, **OFF},
            "padding_free": {"padding_free": True, "group_by_length": True, **OFF},
            "padding_free+label_logits": {"padding_free": True, "group_by_length": True, **OFF,
                                          "logits_at_labels_only": True},
            "padding_free+fused_loss": {"padding_free": True, "group_by_length": True, "logits_at_labels_only": True,
                                        "fused_loss": True}}
FILLER = "Please read the whole request carefully before you answer it. "


def write_data(folder: Path, varied: bool, rows: int, val_rows: int = 8) -> Path:
    from weitiao.demo.count_list import build_splits

    rng = random.Random(0)
    splits = build_splits(seed=0, sizes={"train": rows, "val": val_rows, "test": 8})
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                if varied:
                    messages = [dict(m) for m in row["messages"]]
                    user = next(m for m in messages if m["role"] == "user")
                    user["content"] = FILLER * rng.randint(0, 30) + user["content"]
                    row = {**row, "messages": messages}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


def config(work: Path, model: str, data: Path, name: str, batch: int, variant: dict) -> Path:
    cfg = {"model": {"name_or_path": model},
           "data": {"format": "messages", "train": str(data / "train.jsonl"), "val": str(data / "val.jsonl"),
                    "max_length": 640},
           "method": {"name": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
           "train": {"epochs": 1, "batch_size": batch, "learning_rate": 1e-3, "logging_steps": 1,
                     "precision": "auto", "seed": 0, "save_total_limit": 1, **variant},
           "eval": {"metrics": [], "compare_base": False},
           "output": {"dir": str(work / "runs" / name), "overwrite": True}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; the first is the baseline")
    parser.add_argument("--data", default="demo,varied", help="comma-separated: demo, varied")
    args = parser.parse_args(argv)
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    baseline = next(iter(variants))
    from weitiao.config import load_config
    from weitiao.workflows import sft

    work = Path(args.workdir or tempfile.mkdtemp(prefix="padding-free-"))
    datasets = {name: write_data(work / name, name == "varied", args.rows) for name in args.data.split(",")}
    results: dict = {}
    for round_ in range(args.rounds):
        for data_name, data in datasets.items():
            for name, variant in variants.items():
                run = f"{data_name}-{name}"
                m = sft.run(load_config(config(work, args.model, data, run, args.batch, variant)),
                            overwrite=True).metrics
                results.setdefault(run, []).append(
                    (m["train"]["trained_tokens_per_s"], m["train"]["tokens_per_s"], m["train"]["final_loss"],
                     m["train"]["runtime_s"], m["memory"].get("train_peak_rss_bytes", 0)))
    print(f"\nmodel {args.model}; one epoch of {args.rows} rows in batches of {args.batch}; LoRA r=16 all-linear; "
          f"{args.rounds} round(s)")
    print(f"{'dataset/variant':<36}{'trained tok/s':>14}{'all tok/s':>11}{'vs ' + baseline:>20}{'final loss':>12}"
          f"{'train peak MiB':>16}")
    for data_name in datasets:
        base = results[f"{data_name}-{baseline}"]
        for name in variants:
            rows = results[f"{data_name}-{name}"]
            ratios = [r[1] / b[1] for r, b in zip(rows, base)]
            print(f"{data_name + '/' + name:<36}{statistics.median(r[0] for r in rows):>14.1f}"
                  f"{statistics.median(r[1] for r in rows):>11.1f}{statistics.median(ratios):>19.2f}x"
                  f"{rows[-1][2]:>12.4f}{statistics.median(r[4] for r in rows) / 2**20:>16.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
