"""The `weitiao` command.

    weitiao train CONFIG [section.key=value ...] [--resume] [--overwrite]
    weitiao eval CONFIG|RUN_DIR [section.key=value ...] [--adapter DIR] [--model-dir DIR] [--split test] [--out F]
    weitiao validate CONFIG [section.key=value ...]
    weitiao data check CONFIG [section.key=value ...] [--preview N] [--out F]
    weitiao data demo OUT_DIR [--seed 0]
    weitiao config-reference [--markdown]

A user error (bad config, bad data row, missing model) prints one message and exits with status 2, no traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from weitiao.errors import WeitiaoError

OVERRIDES_HELP = "config overrides as section.key=value (e.g. train.max_steps=20 method.lora.r=8)"


def _quiet() -> None:
    import logging
    import warnings

    # bitsandbytes looks for an optional kernel package on import and logs when it is absent; it then uses its
    # own CPU kernels, so there is nothing for a user to do (and a config error should print one line only)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

    # transformers 5 renames (gradient -> activation checkpointing) that peft still reads; nothing for a user to do
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*", category=FutureWarning)
    # peft's prefix-tuning forward still passes the KV cache as `past_key_values` (renamed `cache`); weitiao's own
    # decoding uses the new name
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated.*", category=FutureWarning)


def _offline() -> None:
    # weitiao never downloads: models and data must be local (see models/loading.py)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_train(args) -> int:
    from weitiao.config import load_config
    from weitiao.workflows import classify, sft

    overrides = list(args.overrides) + (["data.skip_bad_rows=true"] if args.skip_bad_rows else [])
    cfg = load_config(args.config, overrides)
    workflow = classify if cfg.task == "classify" else sft
    workflow.run(cfg, overwrite=args.overwrite, resume=args.resume)
    return 0


def cmd_eval(args) -> int:
    from weitiao.config import load_config
    from weitiao.workflows import evaluate

    target = Path(args.target)
    adapter, model_dir = args.adapter, args.model_dir
    if target.is_dir():
        if not (target / "run.json").is_file():
            raise WeitiaoError(f"{target} is a folder but not a weitiao run folder (no run.json)")
        config_path, run_adapter, run_model = evaluate.load_run(target)
        adapter = adapter or run_adapter
        model_dir = model_dir or run_model
    else:
        config_path = target
    cfg = load_config(config_path, args.overrides)
    evaluate.run(cfg, adapter=adapter, model_dir=model_dir, split=args.split, out=args.out)
    return 0


def cmd_validate(args) -> int:
    from weitiao.config import load_config
    from weitiao.data.dataset import encode_split, load_splits
    from weitiao.workflows.common import find_model

    cfg = load_config(args.config, args.overrides)
    print(f"config {args.config}: ok")
    splits = load_splits(cfg.data, cfg.base_dir)
    if cfg.task == "classify":
        return validate_classify(cfg, splits)
    source, _, tokenizer, template = find_model(cfg)
    for name in ("train", "val", "test"):
        examples = getattr(splits, name)
        if not examples:
            print(f"{name}: no rows")
            continue
        enc = encode_split(examples, template, tokenizer, cfg.data, name, splits.report)
        lengths = sorted(len(e.input_ids) for e in enc)
        print(f"{name}: {len(examples)} rows ok; tokens per row min {lengths[0]}, median "
              f"{lengths[len(lengths) // 2]}, max {lengths[-1]}; truncated {splits.report[f'{name}_truncated']}, "
              f"dropped as over-long {splits.report[f'{name}_overlong_dropped']}")
    print(f"model {source.label} ({source.kind}); template {template.name}, end of turn {template.eot!r}")
    print("valid: nothing was trained or written")
    return 0


def validate_classify(cfg, splits) -> int:
    from weitiao.data.dataset import encode_labelled, label_names
    from weitiao.models.loading import load_tokenizer, local_folder, resolve_source

    labels = label_names(cfg.data, splits)
    source = resolve_source(cfg.model.name_or_path, cfg.model.convert_pickle)
    tokenizer = load_tokenizer(local_folder(source, print, cfg.model.trust_remote_code), cfg.model.trust_remote_code)
    for name in ("train", "val", "test"):
        examples = getattr(splits, name)
        if not examples:
            print(f"{name}: no rows")
            continue
        enc = encode_labelled(examples, tokenizer, labels, cfg.data.max_length, name, splits.report)
        lengths = sorted(len(e["input_ids"]) for e in enc)
        counts = ", ".join(f"{k} {v}" for k, v in splits.report[f"{name}_label_counts"].items())
        print(f"{name}: {len(examples)} rows ok ({counts}); tokens per row max {lengths[-1]}, truncated "
              f"{splits.report[f'{name}_truncated']}")
    print(f"model {source.label} ({source.kind}); {len(labels)} classes: {', '.join(labels)}")
    print("valid: nothing was trained or written")
    return 0


def _settings_from_args(args, method: str = "lora"):
    from weitiao.memory.estimate import TrainSettings

    device = args.device
    return TrainSettings(method=method, seq=args.seq, batch=args.batch, precision=args.precision,
                         weights_dtype=args.weights_dtype or ("bfloat16" if device == "cuda" else "float32"),
                         optimizer=args.optimizer, gradient_checkpointing=args.gc, lora_r=args.lora_r,
                         device=device)


def cmd_estimate(args) -> int:
    import json

    from weitiao.memory.estimate import (
        DTYPE_BYTES, distributed_estimate, inference_bytes, kv_cache_bytes, training_estimate,
    )
    from weitiao.memory.shape import load_config_dict, model_shape

    shape = model_shape(load_config_dict(args.model))
    methods = args.methods.split(",") if args.methods else ["full", "freeze", "lora", "qlora", "prefix", "prompt"]
    rows = {}
    for method in methods:
        s = _settings_from_args(args, method)
        parts = training_estimate(shape, s)
        if args.gpus > 1:
            parts["per_device"] = distributed_estimate(parts, s, args.gpus, args.strategy)
        rows[method] = parts
    inference = {d: inference_bytes(shape, d) for d in ("float32", "bfloat16", "int8", "int4")}
    kv = kv_cache_bytes(shape, args.seq, args.batch, "bfloat16")
    if args.json:
        print(json.dumps({"model": args.model, "shape": shape.as_dict(), "inference_bytes": inference,
                          "kv_cache_bytes": kv, "training": rows, "settings": vars(_settings_from_args(args))},
                         indent=2, default=str))
        return 0
    gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
    print(f"{args.model}: {shape.model_type}, {shape.params:,} parameters ({shape.params / 1e9:.2f} B); "
          f"{shape.layers} layers, hidden {shape.hidden}, vocab {shape.vocab}")
    print("inference, weights only (GiB): " + "  ".join(f"{d} {gib(b)}" for d, b in inference.items()))
    print(f"KV cache, {args.seq} tokens x batch {args.batch} (bf16): {gib(kv)} GiB")
    print(f"\ntraining on {args.device}, seq {args.seq} x batch {args.batch}, {args.precision} activations, "
          f"{args.optimizer}, gradient checkpointing {'on' if args.gc else 'off'}"
          + (f", {args.gpus} GPUs {args.strategy} (per device)" if args.gpus > 1 else "") + " (GiB):")
    head = ["trainable", "weights", "grads+optim", "activations", "logits", "overhead", "total"]
    print(f"{'method':8}" + "".join(f"{h:>13}" for h in head))
    for method, p in rows.items():
        state = p["gradients"] + p["optimizer_states"] + p["trainable_weights"]
        cells = [f"{p['trainable_params'] / 1e6:.2f}M", gib(p["weights"]), gib(state), gib(p["activations"]),
                 gib(p["logits_and_loss"]), gib(p["overhead"]), gib(p.get("per_device", p["total"]))]
        print(f"{method:8}" + "".join(f"{c:>13}" for c in cells))
    print(f"\n(formulas and fitted constants: weitiao/memory/estimate.py, constants.json; "
          f"{DTYPE_BYTES['float32']} bytes per fp32 weight)")
    return 0


def cmd_plan(args) -> int:
    from weitiao.memory.plan import parse_size, plan
    from weitiao.memory.shape import load_config_dict, model_shape

    try:
        budget = parse_size(args.memory)
    except ValueError as err:
        raise WeitiaoError(f"--memory: {err}") from None
    shape = model_shape(load_config_dict(args.model))
    result = plan(shape, budget, _settings_from_args(args), gpus=args.gpus)
    for line in result.rejected:
        print(f"does not fit: {line}")
    if result.settings is None:
        print(f"nothing fits {budget / 2**30:.2f} GiB per device; shorten --seq or add GPUs")
        return 1
    s = result.settings
    print(f"plan: method {s.method}, micro-batch {s.batch} x grad_accum {result.grad_accum}, seq {s.seq}, "
          f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, optimizer {s.optimizer}"
          + (f", strategy {result.strategy} on {args.gpus} GPUs" if args.gpus > 1 else ""))
    print(f"estimate {result.estimate / 2**30:.2f} GiB of {budget / 2**30:.2f} GiB per device "
          f"(margin {100 * result.margin:.0f}%)")
    if args.write_config:
        from weitiao.config import dump_config, load_config, resolved

        if not args.out:
            raise WeitiaoError("--write-config needs --out NEW.yaml (the original config is not changed)")
        if Path(args.out).exists():
            raise WeitiaoError(f"--out: {args.out} exists; choose a new file name")
        optim = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "sgd": "sgd"}[s.optimizer]
        cfg = load_config(args.write_config, [f"method.name={s.method}", f"train.batch_size={s.batch}",
                                              f"train.grad_accum={result.grad_accum}", f"train.optim={optim}",
                                              f"train.gradient_checkpointing={str(s.gradient_checkpointing).lower()}",
                                              f"data.max_length={s.seq}"])
        Path(args.out).write_text(dump_config(resolved(cfg)), encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def _add_memory_args(p) -> None:
    p.add_argument("model", help="a model folder, a config.json, a .gguf file or a bundled model name")
    p.add_argument("--seq", type=int, default=512, help="tokens per row (default 512)")
    p.add_argument("--batch", type=int, default=8, help="rows per step per device (default 8)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="constants of which device (cuda)")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16", help="activation dtype")
    p.add_argument("--weights-dtype", choices=["float32", "bfloat16", "float16"],
                   help="dtype the base is loaded in (default bf16 on cuda, fp32 on cpu)")
    p.add_argument("--optimizer", choices=["adamw", "adamw_8bit", "sgd"], default="adamw")
    p.add_argument("--gc", action="store_true", help="gradient checkpointing")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--gpus", type=int, default=1)


def cmd_config_reference(args) -> int:
    from weitiao.config import config_reference

    print(config_reference(markdown=args.markdown), end="")
    return 0


def cmd_data_check(args) -> int:
    from weitiao.config import load_config
    from weitiao.workflows import data_check

    cfg = load_config(args.config, args.overrides)
    return data_check.run(cfg, preview=args.preview, out=args.out)


def cmd_data_demo(args) -> int:
    from weitiao.demo import count_list, support_intent

    demo = {"count_list": count_list, "support_intent": support_intent}[args.task]
    for name, path in demo.write_splits(args.out_dir, args.seed).items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weitiao",
        description="Fine-tune a pretrained transformer on your data, and prove what it changed.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="fine-tune as the config says, then compare base and tuned on the test split",
                       description="Fine-tune as CONFIG says. Every input is checked before the output folder "
                                   "is created. See `weitiao config-reference` for every key.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in output.dir")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="train on the good rows; skipped rows are listed in OUTPUT/skipped_rows.jsonl")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("estimate", help="memory of a model for inference and for training with each method",
                       description="Estimate memory from the model's config alone (no weights are loaded): "
                                   "inference per dtype, KV cache, and training per method broken down into "
                                   "weights, gradients + optimizer states, activations, logits and overhead.")
    _add_memory_args(p)
    p.add_argument("--methods", help="comma-separated methods (default: all)")
    p.add_argument("--strategy", choices=["ddp", "zero1", "zero2", "zero3", "fsdp"], default="ddp",
                   help="with --gpus > 1: how state is sharded")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("plan", help="the best training setup that fits a memory budget",
                       description="Choose full, then LoRA, then QLoRA, with the largest micro-batch, no gradient "
                                   "checkpointing where possible, that fits --memory per device with 10% margin; "
                                   "says why each better option does not fit.")
    _add_memory_args(p)
    p.add_argument("--memory", required=True, help="memory per device, e.g. 24GiB")
    p.add_argument("--write-config", metavar="CONFIG", help="apply the plan to this config ...")
    p.add_argument("--out", help="... and write the result to this new file")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("eval", help="score a model (or model + adapter, or a finished run) on a split",
                       description="Loss, perplexity and the configured generation metrics of a model on a split.")
    p.add_argument("target", help="YAML config file, or a finished run folder (uses its config and weights)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--adapter", help="peft adapter folder to load on top of the base model")
    p.add_argument("--model-dir", help="evaluate this model folder instead of model.name_or_path")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split (default test)")
    p.add_argument("--out", help="write metrics and predictions to this JSON file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("validate", help="check config, data and model files without training",
                       description="Check the config, read and encode every data row, and find the model; "
                                   "nothing is trained or written.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("config-reference", help="print every config key with its type, default and meaning")
    p.add_argument("--markdown", action="store_true", help="as Markdown tables")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("data", help="check data files, or write the demo dataset")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    q = data_sub.add_parser("check", help="report bad rows, duplicates, leakage and token lengths",
                            description="Read every row of every data file of CONFIG and report each bad row with "
                                        "file, line and reason, exact and near duplicates, train/val/test leakage, "
                                        "token lengths and a preview of what is trained. Exit status 1 when any "
                                        "row is bad.")
    q.add_argument("config", help="YAML config file")
    q.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    q.add_argument("--preview", type=int, default=2, help="show N training rows with trained tokens marked")
    q.add_argument("--out", help="write the full report to this JSON file")
    q.set_defaults(func=cmd_data_check)
    q = data_sub.add_parser("demo", help="write the demo task's train/val/test JSONL files",
                            description="Write a deterministic demo dataset: `count_list` ('list exactly N items', "
                                        "messages rows) or `support_intent` (5-way message classification, "
                                        "text/label rows).")
    q.add_argument("out_dir", help="folder for train.jsonl, val.jsonl and test.jsonl")
    q.add_argument("--task", choices=["count_list", "support_intent"], default="count_list",
                   help="which demo dataset (default count_list)")
    q.add_argument("--seed", type=int, default=0, help="dataset seed (default 0, the bundled files)")
    q.set_defaults(func=cmd_data_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline()
    _quiet()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WeitiaoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
