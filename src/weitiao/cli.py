"""The `weitiao` command.

    weitiao train CONFIG [section.key=value ...] [--resume] [--overwrite] [--nproc N [--nnodes M --node-rank R ...]]
    weitiao eval CONFIG|RUN_DIR [section.key=value ...] [--adapter DIR] [--model-dir DIR] [--split test] [--out F]
    weitiao validate CONFIG [section.key=value ...]
    weitiao data check CONFIG [section.key=value ...] [--preview N] [--out F]
    weitiao data demo OUT_DIR [--seed 0]
    weitiao config-reference [--markdown]
    weitiao chat|generate|serve RUN_OR_MODEL ...;  weitiao export RUN --out DIR
    weitiao ui [--root runs] [--host 127.0.0.1] [--port 7860] [--auth USER:PASSWORD]

A user error (bad config, bad data row, missing model) prints one message and exits with status 2, no traceback.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from weitiao.errors import WeitiaoError

OVERRIDES_HELP = "config overrides as section.key=value (e.g. train.max_steps=20 method.lora.r=8)"


def cmd_train(args) -> int:
    from weitiao import api
    from weitiao.config import load_config

    overrides = list(args.overrides) + (["data.skip_bad_rows=true"] if args.skip_bad_rows else [])
    cfg = load_config(args.config, overrides)  # a config error is reported once, before any process starts
    from weitiao.training import distributed

    if args.nproc < 1 or args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise WeitiaoError(f"--nproc {args.nproc} --nnodes {args.nnodes} --node-rank {args.node_rank}: need "
                           "nproc >= 1, nnodes >= 1 and 0 <= node-rank < nnodes")
    several = args.nproc > 1 or args.nnodes > 1 or distributed.world().world_size > 1
    if several and cfg.task != "sft":
        raise WeitiaoError(f"task {cfg.task} runs on one process for now; multi-process runs are task sft")
    if several and "WORLD_SIZE" not in os.environ:
        flags = [f for f, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                 ("--skip-bad-rows", args.skip_bad_rows)) if on]
        return distributed.launch(["train", args.config, *args.overrides, *flags], args.nproc, args.nnodes,
                                  args.node_rank, args.master_addr, args.master_port)
    api.train(cfg, overwrite=args.overwrite, resume=args.resume)
    distributed.finish()
    return 0


def cmd_eval(args) -> int:
    from weitiao import api

    target = Path(args.target)
    result = api.evaluate(target, split=args.split, rephrase=args.rephrase, adapter=args.adapter,
                          model_dir=args.model_dir, out=args.out, overrides=args.overrides)
    if args.rephrase and target.is_dir() and not (args.adapter or args.model_dir) and args.split == "test":
        # a run's own tuned model on its test rows: kept in the run folder, and its report shows it
        from weitiao.runs import write_json
        from weitiao.workflows import compare

        write_json(target / "rephrased.json", result)
        if (target / "report").is_dir():
            compare.run(target)
    return 0


def cmd_compare(args) -> int:
    from weitiao.workflows import compare

    compare.run(args.run, args.other, out=args.out, samples=args.samples, seed=args.seed)
    return 0


def cmd_validate(args) -> int:
    from weitiao.config import PAIR_TASKS, TASK_RULES, load_config
    from weitiao.data.dataset import encode_documents, encode_pair_split, encode_split, load_splits
    from weitiao.data.splits import open_stream
    from weitiao.models.resolve import find_model

    cfg = load_config(args.config, args.overrides)
    print(f"config {args.config}: ok")
    if cfg.rephrase.templates:
        from weitiao.evaluation.rephrase import check_source, rules_path

        check_source(cfg)
        print(f"rephrase.templates {rules_path(cfg)}: ok")
    splits = load_splits(cfg.data, cfg.base_dir)
    if cfg.data.streaming:
        open_stream(cfg, splits, None)
    if cfg.task in ("classify", "regress"):
        return validate_labelled(cfg, splits)
    source, _, tokenizer, template = find_model(cfg)
    for name in ("train", "val", "test"):
        examples = getattr(splits, name)
        if name == "train" and splits.stream:
            print("train: streamed (data.streaming); its first row is usable, and each row is checked when training "
                  "reads it (`weitiao data check` reads them all now)")
            continue
        if not examples:
            print(f"{name}: no rows")
            continue
        if cfg.task in PAIR_TASKS:  # pairs: prompt + the longer of the two answers
            pairs = encode_pair_split(examples, template, tokenizer, cfg.data, name, splits.report)
            lengths = sorted(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)
        elif TASK_RULES[cfg.task].documents:  # documents: cut into max_length pieces
            pieces, _ = encode_documents(examples, template, tokenizer, cfg.data, name, splits.report)
            print(f"{name}: {len(examples)} documents, {splits.report[f'{name}_tokens']} tokens in {len(pieces)} "
                  f"pieces of at most {cfg.data.max_length} tokens, none dropped")
            continue
        else:
            lengths = sorted(len(e.input_ids) for e in encode_split(examples, template, tokenizer, cfg.data, name,
                                                                    splits.report))
        if not lengths:
            raise WeitiaoError(f"data.{name}: every row is longer than data.max_length {cfg.data.max_length} "
                               f"and was dropped (data.overlong: {cfg.data.overlong}); raise data.max_length")
        print(f"{name}: {len(examples)} rows ok; tokens per row min {lengths[0]}, median "
              f"{lengths[len(lengths) // 2]}, max {lengths[-1]}; truncated {splits.report[f'{name}_truncated']}, "
              f"dropped as over-long {splits.report[f'{name}_overlong_dropped']}")
    print(f"model {source.label} ({source.kind}); template {template.name}, end of turn {template.eot!r}")
    print("valid: nothing was trained or written")
    return 0


def validate_labelled(cfg, splits) -> int:
    from weitiao.data.dataset import encode_labelled, label_names, score_labels
    from weitiao.models.loading import load_tokenizer, local_folder, resolve_source

    labels = label_names(cfg.data, splits) if cfg.task == "classify" else score_labels(splits)
    source = resolve_source(cfg.model.name_or_path, cfg.model.convert_pickle, cfg.model.revision)
    tokenizer = load_tokenizer(local_folder(source, print, cfg.model.trust_remote_code), cfg.model.trust_remote_code)
    for name in ("train", "val", "test"):
        examples = getattr(splits, name)
        if name == "train" and splits.stream:
            print("train: streamed (data.streaming); its first row is usable, and each row is checked when training "
                  "reads it (`weitiao data check` reads them all now)")
            continue
        if not examples:
            print(f"{name}: no rows")
            continue
        enc = encode_labelled(examples, tokenizer, labels, cfg.data.max_length, name, splits.report)
        lengths = sorted(len(e["input_ids"]) for e in enc)
        counts = (", ".join(f"{k} {v}" for k, v in splits.report[f"{name}_label_counts"].items()) if labels
                  else "scores " + ", ".join(f"{k} {v}" for k, v in splits.report[f"{name}_scores"].items()))
        print(f"{name}: {len(examples)} rows ok ({counts}); tokens per row max {lengths[-1]}, truncated "
              f"{splits.report[f'{name}_truncated']}")
    print(f"model {source.label} ({source.kind}); " + (f"{len(labels)} classes: {', '.join(labels)}" if labels
                                                        else "a one-output regression head"))
    print("valid: nothing was trained or written")
    return 0


def _settings_from_args(args, method: str = "lora"):
    from weitiao.memory.estimate import TrainSettings

    device = args.device
    return TrainSettings(method=method, seq=args.seq, batch=args.batch, precision=args.precision,
                         weights_dtype=args.weights_dtype or ("bfloat16" if device == "cuda" else "float32"),
                         optimizer=args.optimizer, gradient_checkpointing=args.gc, lora_r=args.lora_r,
                         device=device, loss_chunk=args.loss_chunk)


def cmd_estimate(args) -> int:
    import json

    from weitiao.memory.estimate import (
        DTYPE_BYTES,
        METHOD_FAMILY,
        distributed_estimate,
        inference_bytes,
        kv_cache_bytes,
        training_estimate,
    )
    from weitiao.memory.shape import load_config_dict, model_shape

    shape = model_shape(load_config_dict(args.model))
    methods = args.methods.split(",") if args.methods else list(METHOD_FAMILY)  # every method it has a model of
    unknown = [m for m in methods if m not in METHOD_FAMILY]
    if unknown:
        raise WeitiaoError(f"--methods: no memory model for {', '.join(unknown)} (estimated: "
                           f"{', '.join(METHOD_FAMILY)})")
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
    print_plan(result, args.gpus, budget)
    if args.write_config:
        from weitiao.config import dump_config, load_config, resolved
        from weitiao.memory.plan import STRATEGY_CONFIG

        if not args.out:
            raise WeitiaoError("--write-config needs --out NEW.yaml (the original config is not changed)")
        if Path(args.out).exists():
            raise WeitiaoError(f"--out: {args.out} exists; choose a new file name")
        optim = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "sgd": "sgd"}[s.optimizer]
        cfg = load_config(args.write_config, [f"method.name={s.method}", f"train.batch_size={s.batch}",
                                              f"train.grad_accum={result.grad_accum}", f"train.optim={optim}",
                                              f"train.gradient_checkpointing={str(s.gradient_checkpointing).lower()}",
                                              f"data.max_length={s.seq}"]
                          + (STRATEGY_CONFIG[result.strategy] if result.devices > 1 else []))
        Path(args.out).write_text(dump_config(resolved(cfg)), encoding="utf-8")
        print(f"wrote {args.out}; run it with: weitiao train {args.out}"
              + (f" --nproc {result.devices}" if result.devices > 1 else ""))
    return 0


def print_plan(result, gpus: int, budget: int) -> None:
    """The plan, why it uses the devices it does, and each strategy's memory and traffic on all `gpus`."""
    s = result.settings
    where = f"strategy {result.strategy} on {result.devices} devices" if result.devices > 1 else "on one device"
    print(f"plan: method {s.method}, micro-batch {s.batch} x grad_accum {result.grad_accum}, seq {s.seq}, "
          f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, optimizer {s.optimizer}, {where}")
    print(f"estimate {result.estimate / 2**30:.2f} GiB of {budget / 2**30:.2f} GiB per device "
          f"(margin {100 * result.margin:.0f}%)")
    if gpus > 1 and result.devices == 1:
        print(f"one device is enough: the model and its training state fit on one, and one device sends nothing "
              f"to another at each step. The other {gpus - 1} can train other runs, or, with ddp below, split each "
              "batch (more rows per second, at the cost of the all-reduce).")
    elif result.devices < gpus:
        print(f"{result.devices} of the {gpus} devices are enough: more would shard further and exchange as much")
    if result.options:
        print(f"strategies on all {gpus} devices, at these settings (sent: bytes each device sends per step):")
        for o in result.options:
            print(f"  {o['strategy']:6} {o['per_device'] / 2**30:8.2f} GiB per device  "
                  f"{'fits    ' if o['fits'] else 'too big '} sent {o['sent_per_step'] / 2**30:8.2f} GiB"
                  + ("" if o.get("tested", True) else "  (DeepSpeed: configured, never run in this project)"))


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
    p.add_argument("--loss-chunk", type=int, default=1024,
                   help="positions per chunk of the fused head-and-loss pass (train.fused_loss_chunk, default 1024; "
                        "0: the whole logits at once, train.fused_loss: false)")
    p.add_argument("--gpus", type=int, default=1, help="devices available (plan: it may use fewer)")


def cmd_config_reference(args) -> int:
    from weitiao.config import config_reference

    print(config_reference(markdown=args.markdown), end="")
    return 0


def cmd_data_check(args) -> int:
    from weitiao.config import load_config
    from weitiao.workflows import data_check

    cfg = load_config(args.config, args.overrides)
    return data_check.run(cfg, preview=args.preview, out=args.out)


def cmd_data_augment(args) -> int:
    from weitiao.config import load_config
    from weitiao.workflows import augment

    cfg = load_config(args.config, args.overrides)
    augment.run(cfg, args.out, overwrite=args.overwrite)
    return 0


def cmd_data_demo(args) -> int:
    from weitiao.demo import count_list, count_list_zh, person_extraction, review_scores, support_intent

    write = {"count_list": count_list.write_splits, "count_list_preference": count_list.write_preference_splits,
             "count_list_one_phrasing": count_list.write_one_phrasing_splits,
             "count_list_zh": count_list_zh.write_splits,
             "support_intent": support_intent.write_splits, "person_extraction": person_extraction.write_splits,
             "review_scores": review_scores.write_splits}[args.task]
    for name, path in write(args.out_dir, args.seed).items():
        print(f"{name}: {path}")
    return 0


def _sampling(args):
    from weitiao.serving.engine import Sampling

    return Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    seed=args.seed)


def _add_sampling_args(p, max_new_tokens: int = 256) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"(default {max_new_tokens})")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy, as evaluation decodes (default 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling, with --temperature > 0")
    p.add_argument("--seed", type=int, help="sampling seed")


def cmd_chat(args) -> int:
    from weitiao.serving import chat
    from weitiao.serving.engine import Engine
    from weitiao.serving.loaded import load

    loaded = load(args.target, device=args.device, overrides=args.overrides)
    return chat.run(Engine(loaded), _sampling(args), system=args.system)


def cmd_generate(args) -> int:
    from weitiao.config import GenerationConfig
    from weitiao.serving import batch
    from weitiao.serving.loaded import load

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise WeitiaoError("--batch-size and --max-new-tokens must be at least 1")
    loaded = load(args.target, device=args.device, overrides=args.overrides)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           do_sample=args.temperature > 0, temperature=args.temperature or 1.0, top_p=args.top_p)
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    batch.run(loaded, args.input, args.out, gen, overwrite=args.overwrite)
    return 0


def cmd_export(args) -> int:
    from weitiao.serving import export

    export.run(args.run, args.out, dtype=args.dtype, overwrite=args.overwrite, tolerance=args.tolerance,
               format=args.format, quant=args.quant)
    return 0


def cmd_serve(args) -> int:
    from weitiao.serving import template_check
    from weitiao.serving.engine import Engine
    from weitiao.serving.loaded import add_adapter, load
    from weitiao.serving.server import ServerLimits, serve

    api_key = args.api_key or os.environ.get("WEITIAO_API_KEY") or None
    limits = ServerLimits(api_key=api_key, max_request_bytes=args.max_request_bytes, max_tokens=args.max_tokens,
                          default_max_tokens=min(256, args.max_tokens), max_concurrent=args.max_concurrent)
    if limits.max_concurrent < 1 or limits.max_tokens < 1 or limits.max_request_bytes < 1:
        raise WeitiaoError("--max-concurrent, --max-tokens and --max-request-bytes must be at least 1")
    loaded = load(args.target, device=args.device)
    for spec in args.adapter or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise WeitiaoError(f"--adapter {spec!r}: expected NAME=RUN_OR_ADAPTER_DIR")
        add_adapter(loaded, name, path)
    # what the server sends must be what training used: the same ids, the same end-of-turn token
    checked = template_check.check_round_trip(loaded.tokenizer, loaded.template, loaded.tokenizer,
                                              loaded.template.stop_ids, template_check.sample_conversations(loaded))
    print(f"template round trip: {checked} conversations render to the training ids")
    serve(Engine(loaded, serve_base=args.serve_base), limits, args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weitiao",
        description="Fine-tune a pretrained transformer on your data, and prove what it changed.",
    )
    parser.add_argument("--offline", action="store_true",
                        help="read hub models and datasets from the local cache only, never download (anywhere on "
                             "the command line; HF_HUB_OFFLINE=1 does the same)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_memory(sub)
    _add_evaluation(sub)
    _add_serving(sub)
    _add_ui(sub)
    _add_config(sub)
    _add_data(sub)
    return parser


def _add_train(sub) -> None:
    """Train: fine-tune as the config says."""
    p = sub.add_parser("train", help="fine-tune as the config says, then compare base and tuned on the test split",
                       description="Fine-tune as CONFIG says. Every input is checked before the output folder "
                                   "is created. See `weitiao config-reference` for every key.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in output.dir")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="train on the good rows; skipped rows are listed in OUTPUT/skipped_rows.jsonl")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="processes on this machine (one per GPU; on a CPU, N processes share its cores); the "
                        "config's distributed.strategy says how they share the work (default ddp)")
    p.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines in the run (default 1)")
    p.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's rank, 0 .. M-1")
    p.add_argument("--master-addr", default="127.0.0.1", help="address of the machine of node rank 0")
    p.add_argument("--master-port", type=int, default=29500, help="a free port on the machine of node rank 0")
    p.set_defaults(func=cmd_train)


def _add_memory(sub) -> None:
    """Estimate and plan: memory before anything loads."""
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
                       description="Choose full, then LoRA, then QLoRA, on the fewest of --gpus devices, with the "
                                   "largest micro-batch, no gradient checkpointing where possible, that fits "
                                   "--memory per device with 10% margin; says why each better option does not fit, "
                                   "and what each sharding strategy costs in memory and traffic.")
    _add_memory_args(p)
    p.add_argument("--memory", required=True, help="memory per device, e.g. 24GiB")
    p.add_argument("--write-config", metavar="CONFIG", help="apply the plan to this config ...")
    p.add_argument("--out", help="... and write the result to this new file")
    p.set_defaults(func=cmd_plan)


def _add_evaluation(sub) -> None:
    """Eval and compare: scores and the base-vs-tuned report."""
    p = sub.add_parser("eval", help="score a model (or model + adapter, or a finished run) on a split",
                       description="Loss, perplexity and the configured generation metrics of a model on a split.")
    p.add_argument("target", help="YAML config file, or a finished run folder (uses its config and weights)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--adapter", help="peft adapter folder to load on top of the base model")
    p.add_argument("--model-dir", help="evaluate this model folder instead of model.name_or_path")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split (default test)")
    p.add_argument("--out", help="write metrics and predictions to this JSON file")
    p.add_argument("--rephrase", action="store_true",
                   help="also ask every question in rephrase.k other phrasings (rephrase.templates rules, or written "
                        "by rephrase.model) and report original vs rephrased")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="base vs tuned of a run, or two runs: an HTML report with intervals",
                       description="Compare base and tuned on a finished run's test rows (or the tuned models of "
                                   "two runs on the rows both scored): metric changes with paired bootstrap 95% "
                                   "intervals, rows that improved or regressed, the forgetting check and the loss "
                                   "curves, in a self-contained report.html. No model is loaded.")
    p.add_argument("run", help="a finished run folder")
    p.add_argument("other", nargs="?", help="a second finished run: compare RUN (A) with OTHER (B)")
    p.add_argument("--out", help="report folder (default RUN/report, or OTHER/compare-RUN for two runs)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=cmd_compare)


def _add_serving(sub) -> None:
    """Chat, generate, export and serve: using a run."""
    p = sub.add_parser("chat", help="talk to a run or a model in the terminal, streaming",
                       description="Multi-turn chat with the run's own chat template and stop tokens. At the prompt: "
                                   "/reset, /system TEXT, /exit.")
    p.add_argument("target", help="a finished run folder, or a model (anything model.name_or_path accepts)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    _add_sampling_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("generate", help="answer every row of a file into JSONL (batched, resumable)",
                       description="Batched generation over a json/jsonl/csv/parquet file: rows with 'messages', "
                                   "'prompt', or the run's data format. Output: one JSON line per row, in order; "
                                   "an interrupted run continues where it stopped.")
    p.add_argument("target", help="a finished run folder, or a model")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--input", required=True, help="rows to answer")
    p.add_argument("--out", required=True, help="JSONL file to write (continued if it exists)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="start --out over instead of continuing it")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    _add_sampling_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="merge a run's adapter into its base: a plain HF model folder, or a GGUF file "
                                      "with an Ollama Modelfile",
                       description="Merge LoRA/QLoRA into the base (QLoRA: into a de-quantized copy). --format hf "
                                   "writes safetensors, tokenizer, chat template and generation config with the run's "
                                   "stop tokens; --format gguf writes one GGUF file (Llama, Mistral, Qwen2) for "
                                   "llama.cpp and a Modelfile for Ollama with the run's template and stop tokens. "
                                   "Refuses when the export, read back, differs from the unmerged model beyond "
                                   "tolerance, or the template does not round-trip. Prefix/prompt runs export the "
                                   "adapter (cannot be merged).")
    p.add_argument("run", help="a finished run folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf",
                   help="hf: a Hugging Face model folder; gguf: a GGUF file and an Ollama Modelfile")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="weights of an hf export (default fp32)")
    p.add_argument("--quant", choices=["f16", "q8_0", "f32"],
                   help="weights of a gguf export (default q8_0: 8-bit blocks; f16 is larger and closer)")
    p.add_argument("--tolerance", type=float, help="largest allowed total variation distance between the export's "
                   "and the unmerged model's next-token distributions (default: hf fp32 1e-3, fp16 0.05, bf16 0.15; "
                   "gguf f32 1e-3, f16 0.05, q8_0 0.25)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server for a run or a model",
                       description="POST /v1/chat/completions (streaming or not), /v1/completions, GET /v1/models, "
                                   "/health. Decoding is greedy unless a request sets temperature > 0.")
    p.add_argument("target", help="a finished run folder, or a model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set WEITIAO_API_KEY)")
    p.add_argument("--adapter", action="append", metavar="NAME=DIR",
                   help="also serve this LoRA run/adapter of the same base as model NAME (repeatable)")
    p.add_argument("--serve-base", action="store_true", help="also serve the base model, as TARGET_NAME:base")
    p.add_argument("--max-concurrent", type=int, default=32, help="requests in flight before 429 (default 32)")
    p.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask (default 1024)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=cmd_serve)


def _add_ui(sub) -> None:
    p = sub.add_parser("ui", help="the browser workbench: new runs, runs, results, chat, preferences, export",
                       description="A local web UI over the same functions as these commands. Training, export "
                                   "and serving run as processes of their own, so closing the browser or the UI "
                                   "stops no run. Binds to 127.0.0.1 unless --host says otherwise; set --auth "
                                   "(or WEITIAO_UI_AUTH) before sharing it.")
    p.add_argument("--root", default="runs", help="the folder of runs it shows and creates (default runs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", metavar="USER:PASSWORD", help="ask for this login (HTTP basic); or set WEITIAO_UI_AUTH")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args) -> int:
    import uvicorn

    from weitiao.ui.app import create_app

    auth = args.auth or os.environ.get("WEITIAO_UI_AUTH") or None
    if auth is not None and (":" not in auth or not auth.split(":", 1)[0] or not auth.split(":", 1)[1]):
        raise WeitiaoError("--auth: give USER:PASSWORD, both non-empty")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not auth:
        print(f"warning: --host {args.host} without --auth: anyone who can reach the port can train and read runs",
              file=sys.stderr)
    app = create_app(args.root, auth)
    print(f"weitiao ui: http://{args.host}:{args.port}/ (runs in {Path(args.root).resolve()}; Ctrl+C stops the UI, "
          "not its jobs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _add_config(sub) -> None:
    """Validate and config-reference."""
    p = sub.add_parser("validate", help="check config, data and model files without training",
                       description="Check the config, read and encode every data row, and find the model; "
                                   "nothing is trained or written.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("config-reference", help="print every config key with its type, default and meaning")
    p.add_argument("--markdown", action="store_true", help="as Markdown tables")
    p.set_defaults(func=cmd_config_reference)


def _add_data(sub) -> None:
    """Data check, augment and demo."""
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
    q = data_sub.add_parser("augment", help="add rephrased copies of the training questions to the training data",
                            description="Write a new training file (messages format): every training row of CONFIG, "
                                        "then up to rephrase.k copies of each with its question rephrased by the "
                                        "rephrase.templates rules or written by rephrase.model (checked, cached). "
                                        "Answers are copied; val and test are left alone.")
    q.add_argument("config", help="YAML config file")
    q.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    q.add_argument("--rephrase", action="store_true", required=True,
                   help="add rephrasings (the augmentation weitiao makes)")
    q.add_argument("--out", required=True, help="the new training file (.jsonl)")
    q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    q.set_defaults(func=cmd_data_augment)
    q = data_sub.add_parser("demo", help="write the demo task's train/val/test JSONL files",
                            description="Write a deterministic demo dataset: `count_list` ('list exactly N items', "
                                        "messages rows), `count_list_preference` (the same prompts as "
                                        "prompt/chosen/rejected pairs, for `task: dpo`/`reward`), "
                                        "`count_list_one_phrasing` (every question asked one way, for the "
                                        "rephrasing demo), `count_list_zh` (生成条数: the same task in Chinese), "
                                        "`support_intent` (5-way message classification, "
                                        "text/label rows), `review_scores` (product reviews scored 1-5, "
                                        "text/label rows for `task: regress`) or `person_extraction` (alpaca "
                                        "rows: an instruction, a paragraph about a person, a JSON answer).")
    q.add_argument("out_dir", help="folder for train.jsonl, val.jsonl and test.jsonl")
    q.add_argument("--task", choices=["count_list", "count_list_zh", "count_list_preference",
                                      "count_list_one_phrasing", "support_intent", "review_scores",
                                      "person_extraction"], default="count_list",
                   help="which demo dataset (default count_list)")
    q.add_argument("--seed", type=int, default=0, help="dataset seed (default 0, the bundled files)")
    q.set_defaults(func=cmd_data_demo)


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse's parse, with config overrides (section.key=value) accepted anywhere on the command line: argparse
    takes a positional list only before the first flag, so `eval RUN --rephrase rephrase.k=3` would leave
    `rephrase.k=3` unrecognised. Such leftovers join the command's overrides, in order; anything else left is the
    usual usage error."""
    args, rest = parser.parse_known_args(argv)
    late = [a for a in rest if OVERRIDE.match(a)]
    unknown = [a for a in rest if not OVERRIDE.match(a)]
    if late and not hasattr(args, "overrides"):
        unknown = rest  # this command takes no overrides
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if late:
        args.overrides = list(args.overrides) + late
    return args


def main(argv: list[str] | None = None) -> int:
    from weitiao.api import environment

    argv = sys.argv[1:] if argv is None else list(argv)
    environment(offline="--offline" in argv)  # before any library reads HF_HUB_OFFLINE, at its import
    args = parse_args(build_parser(), [a for a in argv if a != "--offline"])
    try:
        return args.func(args)
    except WeitiaoError as err:
        rank = int(os.environ.get("RANK", 0))  # in a multi-process run, each process says who it is
        print(f"{f'[rank {rank}] ' if rank else ''}error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
