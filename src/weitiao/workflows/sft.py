"""Supervised fine-tuning: prepare -> load -> score_base -> fit -> score_tuned -> save (see weitiao.stages).

What is particular to SFT: rows are conversations (or plain text) whose answer tokens carry the loss; the model is
a causal LM (`task: pretrain` runs here too: its text rows are documents, cut into pieces, every token trained); the held-out rows are scored by loss and by the answers it generates (eval.metrics), and optionally on
the same questions asked in other words (eval.rephrase) and on general text (eval.forgetting). Several processes
(`--nproc`, torchrun) each run this whole file; rank 0 alone prints, decides about the output folder and writes it
(see training.distributed).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from weitiao.config import TASK_RULES, Config
from weitiao.console import comparison_table, log
from weitiao.data.dataset import encode_documents, encode_split
from weitiao.data.splits import read_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation import rephrase, rephraser
from weitiao.evaluation.compare import write_report
from weitiao.evaluation.forgetting import forgetting_summary, general_text_losses
from weitiao.evaluation.scoring import (base_model_context, gap_lines, prediction_rows, score_rephrased_rows,
                                       score_split)
from weitiao.memory import guard as memory_guard
from weitiao.methods import load_kwargs, method_of, save_trained, unwrapped, weights_footprint
from weitiao.models.loading import load_model, pick_device, pick_dtype
from weitiao.models.precision import autocast_dtype, precision_name, precision_warning, weights_dtype
from weitiao.models.resolve import find_model
from weitiao.runs import TrainResult, decide_mode, finish, run_folder, write_json, write_jsonl, write_predictions
from weitiao.stages import Built, Prepared, log_data, with_method
from weitiao.training import distributed
from weitiao.training.causal_lm import batch_kinds, build_trainer, logit_fraction, logits_kind, packed_attention
from weitiao.training.compile import compiled_layers
from weitiao.training.fit import Fitted, fit
from weitiao.training.segment_attention import training_attention


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    device = pick_device(cfg.model.device)
    distributed.init(cfg, device)
    distributed.check_available(cfg, device)
    mode = decide_mode(cfg, overwrite, resume)
    prepared = prepare(cfg, device)
    built = load(cfg, prepared)
    with run_folder(cfg, mode, prepared.template, prepared.splits.report, prepared.skipped) as out_dir:
        base, rephrasings = score_base(cfg, prepared, built, out_dir)
    fitted = train(cfg, prepared, built, out_dir, mode == "resume")
    tuned, rephrased = score_tuned(cfg, prepared, built, fitted, base, rephrasings)
    return save(cfg, prepared, built, fitted, base, tuned, rephrased)


def prepare(cfg: Config, device: str) -> Prepared:
    """Every row read and checked, the rephrasing rules checked (eval.rephrase), token ids and labels made, and
    the memory estimated before any weight is loaded: stop here when the run cannot fit."""
    splits, skipped = read_splits(cfg)
    if cfg.eval.rephrase:
        rephrase.check_source(cfg)
        rephrase.refuse_the_augmenters_rephraser(cfg, splits.report.get("train_files", []))
    source, folder, tokenizer, template = find_model(cfg)
    splits.report["model_source"] = source.describe()
    encoded, documents = {}, TASK_RULES[cfg.task].documents
    for name in ("train", "val", "test") if not splits.stream else ("val", "test"):
        if documents:  # task pretrain: each document in max_length pieces, none dropped
            encoded[name], pieces = encode_documents(getattr(splits, name), template, tokenizer, cfg.data, name,
                                                     splits.report)
            setattr(splits, name, pieces)  # one example per piece, in step with `encoded`
        else:
            encoded[name] = encode_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                         skipped=skipped)
    report = splits.report
    if splits.stream:  # data.streaming: a stream's rows are tokenized as training reads them
        encoded["train"] = splits.stream.dataset(template, tokenizer, documents, cfg.train.seed,
                                                  cfg.train.batch_size)
        log(f"template: {template.name} (end of turn {template.eot!r}); train tokens counted as the stream is read")
        longest = cfg.data.max_length  # the stream's longest row is not known: the estimate takes the longest allowed
    else:
        log_data(report, skipped, template, "tokens", report["train_tokens"])
        log(f"trained tokens (with a loss): {report['train_trained_tokens']}")
        if not encoded["train"]:
            raise WeitiaoError("data: every training row was dropped as over-long; raise data.max_length")
        longest = max(len(e.input_ids) for e in encoded["train"] + encoded["val"])
    estimate = memory_guard.check(cfg, folder, device, -(-longest // 8) * 8, log,  # batches pad to a multiple of 8
                                  logit_fraction=logit_fraction(cfg, [] if splits.stream  # unknown: the most
                                                                else encoded["train"] + encoded["val"]))
    return Prepared(device, splits, skipped, source, folder, tokenizer, template, encoded, estimate)


def load(cfg: Config, prepared: Prepared) -> Built:
    """The causal LM (sharded or replicated across processes as distributed.* says), then the method. transformers'
    training stack is imported only now: it takes about 10 s on a small CPU, and every input error came first."""
    from transformers import set_seed

    device = prepared.device
    amp = autocast_dtype(cfg.train.precision, device)
    if precision_warning(cfg.train.precision, device):
        log(precision_warning(cfg.train.precision, device))
    world, t0 = distributed.world(), time.time()
    model = load_model(prepared.folder, pick_dtype(weights_dtype(cfg, device), device), device,
                       cfg.model.trust_remote_code, cfg.model.attn_implementation,
                       {**load_kwargs(cfg.method, device), **distributed.load_kwargs(cfg, world)})
    log(f"model: {prepared.source.label} ({type(model).__name__}) on {device}, loaded in {time.time() - t0:.1f}s; "
        f"precision {'fp32' if amp is None else str(amp).replace('torch.', '') + ' autocast'}")
    strategy, sharding = distributed.strategy(cfg, world), distributed.sharding(model)
    if strategy != "single":
        log(f"distributed: {strategy} on {world.world_size} processes ({world.nodes} node(s), backend "
            f"{distributed.backend(cfg, device)}); rank 0 holds {sharding['params_on_rank0']:,} of "
            f"{sharding['params']:,} weights")
    set_seed(cfg.train.seed)  # new weights (LoRA's A matrices, a new head) must be the same in every run
    footprint = weights_footprint(model)
    log(f"base weights in memory: {footprint['stored_bytes'] / 2**20:.1f} MiB as stored "
        f"(fp32 would be {footprint['fp32_bytes'] / 2**20:.1f} MiB)")
    built = with_method(cfg, model, footprint, amp)
    built.extra["sharding"] = sharding
    return built


def score_base(cfg: Config, prepared: Prepared, built: Built, out_dir: Path):
    """(base scores, rephrasings): the base model on the test split, with the forgetting check's "before", and
    the rephrasings of the test questions (eval.rephrase), made before training so that `rephrase.model: base` is
    the model before training. Both are kept across a resume. Every process scores (under FSDP each forward
    needs all of them); rank 0 writes."""
    splits, tokenizer, template, device = prepared.splits, prepared.tokenizer, prepared.template, prepared.device
    model, main = built.model, distributed.world().main
    base_file, rephrasings_file = out_dir / "eval_base.json", out_dir / "rephrasings.json"
    base = distributed.on_main(lambda: json.loads(base_file.read_text()) if base_file.is_file() else None)
    if base is None and cfg.eval.compare_base and splits.test:
        with base_model_context(model) as base_model, distributed.gathered_for_inference(model, device, log):
            base = score_split(base_model, tokenizer, template, splits.test, prepared.encoded["test"], cfg,
                               built.amp, "base").as_dict()
            if cfg.eval.forgetting:
                base["general_text"] = general_text_losses(base_model, tokenizer, cfg.train.batch_size, built.amp)
        if main:
            write_json(base_file, base)
    rephrasings = distributed.on_main(lambda: rephrase.Rephrasings.from_dict(json.loads(
        rephrasings_file.read_text())) if rephrasings_file.is_file() else None)
    if rephrasings is None and cfg.eval.rephrase and splits.test:
        with base_model_context(model) as base_model, distributed.gathered_for_inference(model, device, log):
            rephrasings = rephraser.rephrasings_for(cfg, splits.test[:cfg.eval.max_samples or None], log,
                                                    base=(base_model, tokenizer, template),
                                                    seen=rephrase.seen_texts(splits.train, cfg.rephrase.target))
        if main:
            write_json(rephrasings_file, rephrasings.as_dict())
    return base, rephrasings


def train(cfg: Config, prepared: Prepared, built: Built, out_dir: Path, resume: bool) -> Fitted:
    """`fit` on transformers' Trainer with SFT's batches and loss (training.causal_lm), under the attention for
    packed rows, the method's own training context (LoRA skips its input casts) and compiled decoder layers
    (train.compile)."""
    model, device = built.model, prepared.device
    packed = packed_attention(cfg, model, device)
    trainer = build_trainer(cfg, model, prepared.tokenizer, prepared.encoded, out_dir, device, built.amp, packed)
    with training_attention(unwrapped(model), packed), \
            method_of(cfg.method).training_context(model, cfg.method, built.amp, distributed.strategy(cfg)), \
            compiled_layers(unwrapped(model), cfg.train.compile) as compiled:
        if cfg.train.compile:
            log(f"train.compile: {compiled} decoder layers compiled; the first steps include the compilation"
                if compiled else "train.compile: no repeated decoder layers found; training uncompiled")
        fitted = fit(trainer, cfg, out_dir, device, resume)
    fitted.extra.update(compiled=compiled, packed=packed)
    return fitted


def score_tuned(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base: dict | None, rephrasings):
    """(tuned scores, rephrased scores): the trained model on the test split, on general text when the base was,
    and on the rephrased questions that got a faithful rephrasing."""
    splits, tokenizer, template = prepared.splits, prepared.tokenizer, prepared.template
    if not splits.test:
        return None, None
    rephrased = None
    with distributed.gathered_for_inference(fitted.model, prepared.device, log):
        tuned = score_split(fitted.model, tokenizer, template, splits.test, prepared.encoded["test"], cfg,
                            built.amp, "tuned").as_dict()
        if cfg.eval.forgetting and base and "general_text" in base:
            tuned["general_text"] = general_text_losses(fitted.model, tokenizer, cfg.train.batch_size, built.amp)
        if rephrasings:
            rephrased = score_rephrased_rows(cfg, fitted.model, tokenizer, template, splits.test, rephrasings,
                                             built.amp, "tuned", tuned)
    return tuned, rephrased


def save(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, tuned, rephrased) -> TrainResult:
    """Weights (every process takes part: FSDP gathers each tensor's shards), then rank 0 alone writes the metrics,
    predictions and report, and prints the comparison."""
    out_dir, device, stream = Path(cfg.output.dir), prepared.device, prepared.splits.stream
    if stream:  # what the stream handed to training, for the throughput and metrics.json
        # every process reads the whole stream and keeps its share of each step's batches (accelerate's
        # IterableDatasetShard): a "batch" of the stream is one per process
        stream.settle(fitted.steps_run * cfg.train.grad_accum, cfg.train.batch_size * distributed.world().world_size)
        prepared.splits.report.update(stream.counts.as_report())
        if stream.skipped:
            write_jsonl(out_dir / "skipped_rows.jsonl", [b.as_dict() for b in stream.skipped])
    saved = save_trained(fitted.model, prepared.tokenizer, str(out_dir), cfg.method, main=distributed.world().main)
    if not distributed.world().main:
        return TrainResult({}, fitted.model, prepared.tokenizer, out_dir)
    metrics = run_metrics(cfg, prepared, built, fitted, base, tuned)
    if tuned:
        write_predictions(out_dir / "predictions.jsonl", prediction_rows(prepared.splits.test, tuned, base))
    if rephrased:
        write_json(out_dir / "rephrased.json", {"model": "tuned", "split": "test", "rows": tuned["rows"],
                                                "metrics": tuned["metrics"], "rephrased": rephrased})
        metrics["rephrased"] = {"rows": rephrased["rows"], "metrics": rephrased["metrics"]}
    finish(out_dir, fitted.trainer, metrics, saved)
    log("")
    if tuned:
        columns = {"base": base["metrics"], "tuned": tuned["metrics"]} if base else {"tuned": tuned["metrics"]}
        log(comparison_table(f"test split ({tuned['rows']} rows)", columns))
        if rephrased:
            log(comparison_table(f"tuned, {rephrased['questions']} questions asked {cfg.rephrase.k} other ways",
                                 {"original": tuned["metrics"], "rephrased": rephrased["metrics"]}))
            log(gap_lines(rephrased))
    estimate, peak = prepared.estimate, fitted.peak
    measured = peak.get("train_cuda_max_allocated_bytes", peak.get("train_peak_rss_bytes"))
    if measured and estimate:  # rank 0's peak, against one process's share in a multi-process run
        share = estimate.get("per_process", estimate["total"])
        log(f"\nmemory while training: peak {measured / 2**30:.2f} GiB "
            f"({'CUDA allocated' if device == 'cuda' else 'RSS'}{', rank 0' if 'per_process' in estimate else ''}), "
            f"estimated {share / 2**30:.2f} GiB")
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    if tuned and base and cfg.eval.report:
        write_report(out_dir)
    return TrainResult(metrics, fitted.model, prepared.tokenizer, out_dir)


def run_metrics(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, tuned) -> dict:
    """What metrics.json holds for an SFT run."""
    report, trainer = prepared.splits.report, fitted.trainer
    # a stream's counts are of what this process trained; the rest are per epoch
    rate = fitted.per_run_second if prepared.splits.stream else fitted.per_second
    batches = batch_kinds(getattr(trainer.data_collator, "inner", trainer.data_collator))
    world, strategy = distributed.world(), distributed.strategy(cfg)
    metrics = {
        "method": cfg.method.name,
        "params": built.params(),
        "base_weights": built.footprint,
        "train": {
            **fitted.train_metrics(precision_name(built.amp)),
            **batches,
            "logits": logits_kind(trainer),
            # Liger Kernel's Triton kernels (train.kernels) or transformers' own modules
            "kernels": "liger" if getattr(trainer.args, "use_liger_kernel", False) else "transformers",
            # how padding-free rows kept their examples apart (train.packed_attention); none when none was made
            "packed_attention": None if batches["batches"] == "padded"
            else fitted.extra["packed"] or "mask",
            "compiled_layers": fitted.extra["compiled"],  # train.compile: decoder layers run compiled (0: eager)
            "examples_per_s": round(fitted.result.metrics.get("train_samples_per_second", float("nan")), 3),
            # the training steps alone (no validation, checkpoint saving or logging): the throughput's time base
            "step_seconds": round(fitted.step_seconds, 4),
            # tokens through the model per second of training steps: all (prompt + answer) and those with a loss
            "tokens_per_s": round(rate(report["train_tokens"]), 1),
            "trained_tokens_per_s": round(rate(report["train_trained_tokens"]), 1),
        },
        # rank 0's, in a multi-process run; train_*: the training phase alone, which the estimate is for
        **fitted.common_metrics(prepared.device, prepared.estimate),
        "distributed": {"strategy": strategy, "processes": world.world_size, "nodes": world.nodes,
                        "backend": distributed.backend(cfg, prepared.device) if strategy != "single" else None,
                        **({"fsdp_sharding": cfg.distributed.fsdp_sharding} if strategy == "fsdp" else {}),
                        **built.extra["sharding"]},
        "test": {"rows": tuned["rows"] if tuned else 0, "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
        "data": {"train_rows": report["train_rows"] if prepared.splits.stream else len(prepared.encoded["train"]),
                 "train_tokens": report["train_tokens"], "train_trained_tokens": report["train_trained_tokens"],
                 # data.streaming: what this process's stream read and did (StreamCounts), else null
                 "streamed": prepared.splits.stream.counts.as_report() if prepared.splits.stream else None},
    }
    if tuned and "general_text" in tuned:
        metrics["forgetting"] = forgetting_summary(base["general_text"], tuned["general_text"])
        log(f"forgetting check: loss on general text {metrics['forgetting']['base_loss']:.4f} (base) -> "
            f"{metrics['forgetting']['tuned_loss']:.4f} (tuned)")
    return metrics
