"""Supervised fine-tuning, top to bottom: config -> data -> model -> method -> base eval -> train -> eval -> save.

Everything the user can get wrong (config, data rows, model path, template, method settings) is checked before the
output folder is created, so a bad input leaves nothing behind. The run folder describes itself: resolved config,
library versions, the chat template, the trainer state, metrics and a loss curve.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


from weitiao.config import Config, dump_config, resolved
from weitiao.data.dataset import (BatchCost, CheaperBatchCollator, PadCollator, PaddingFreeCollator, encode_split,
                                  to_hf_dataset)
from weitiao.data.encode import IGNORE_INDEX
from weitiao.errors import Interrupted, WeitiaoError, disk_full_error
from weitiao.evaluation.forgetting import general_text_losses
from weitiao.evaluation import rephrase
from weitiao.memory import guard as memory_guard
from weitiao.methods import (
    ADAPTER_METHODS, PROMPT_LEARNING_METHODS, apply_method, count_parameters, load_kwargs, save_trained, unwrapped,
    weights_footprint,
)
from weitiao.methods import lora
from weitiao.models.loading import load_model, pick_device, pick_dtype
from weitiao.training import distributed
from weitiao.training.checkpoints import last_complete
from weitiao.training.compile import compiled_layers
from weitiao.training.segment_attention import training_attention
from weitiao.workflows.common import (
    RUN_FILE, autocast_dtype, base_model_context, check_output_dir, comparison_table, find_model, forgetting_summary,
    log, plot_losses, precision_warning, prediction_rows, read_splits, remove_dir, score_split, write_json,
    weights_dtype, write_predictions, write_report, write_run_files,
)
from weitiao.workflows.evaluate import gap_lines, score_rephrased


@dataclass
class TrainResult:
    metrics: dict  # what metrics.json holds
    model: object  # the trained model (a PeftModel for adapter methods)
    tokenizer: object
    out_dir: Path


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    out_dir = Path(cfg.output.dir)
    # ---- processes: one, or several started by `--nproc`/torchrun. Every process runs this whole file; rank 0
    # alone prints, decides about the output folder and writes it (see training.distributed)
    device = pick_device(cfg.model.device)
    distributed.init(cfg, device)
    distributed.check_available(cfg, device)
    world = distributed.world()

    def decide_mode() -> str:
        mode = check_output_dir(out_dir, overwrite or cfg.output.overwrite, resume)
        if mode == "resume":
            check_same_config(cfg, out_dir)
        return mode

    mode = distributed.on_main(decide_mode)
    if mode == "resume":
        log(f"resuming the unfinished run in {out_dir} (--overwrite starts over)")

    # ---- data: every row read and checked before the model is loaded (and the rephrasing rules, eval.rephrase)
    splits, skipped = read_splits(cfg)
    if cfg.eval.rephrase:
        rephrase.check_source(cfg)
        rephrase.refuse_the_augmenters_rephraser(cfg, splits.report.get("train_files", []))

    # ---- tokenizer and template, then token ids and labels
    source, folder, tokenizer, template = find_model(cfg)
    encoded = {name: encode_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                  skipped=skipped)
               for name in ("train", "val", "test")}
    if skipped:
        log(f"skipping {len(skipped)} bad row(s) (data.skip_bad_rows); they are listed in skipped_rows.jsonl")
    log(f"template: {template.name} (end of turn {template.eot!r}); train tokens {splits.report['train_tokens']} "
        f"({splits.report['train_trained_tokens']} with loss); truncated {splits.report['train_truncated']}, "
        f"dropped as over-long {splits.report['train_overlong_dropped']}")
    if not encoded["train"]:
        raise WeitiaoError("data: every training row was dropped as over-long; raise data.max_length")

    # ---- memory: estimated before any weight is loaded; stop here when it cannot fit
    longest = max(len(e.input_ids) for e in encoded["train"] + encoded["val"])
    estimate = memory_guard.check(cfg, folder, device, -(-longest // 8) * 8, log,  # batches pad to a multiple of 8
                                  logit_fraction=logit_fraction(cfg, encoded["train"] + encoded["val"]))

    # ---- model and method. transformers' training stack is imported only now: it takes about 10 s to import on a
    # small CPU, and every config and data error above is reported before that
    from transformers import set_seed

    from weitiao.training.callbacks import NonFiniteGuard, SaveOnInterrupt, StepTimer

    amp = autocast_dtype(cfg.train.precision, device)
    if precision_warning(cfg.train.precision, device):
        log(precision_warning(cfg.train.precision, device))
    t0 = time.time()
    model = load_model(folder, pick_dtype(weights_dtype(cfg, device), device), device, cfg.model.trust_remote_code,
                       cfg.model.attn_implementation, {**load_kwargs(cfg.method, device),
                                                       **distributed.load_kwargs(cfg, world)})
    log(f"model: {source.label} ({type(model).__name__}) on {device}, loaded in {time.time() - t0:.1f}s; "
        f"precision {'fp32' if amp is None else str(amp).replace('torch.', '') + ' autocast'}")
    strategy = distributed.strategy(cfg, world)
    sharding = distributed.sharding(model)
    if strategy != "single":
        log(f"distributed: {strategy} on {world.world_size} processes ({world.nodes} node(s), backend "
            f"{distributed.backend(cfg, device)}); rank 0 holds {sharding['params_on_rank0']:,} of "
            f"{sharding['params']:,} weights")
    set_seed(cfg.train.seed)  # new weights (LoRA's A matrices, a new head) must be the same in every run
    footprint = weights_footprint(model)
    log(f"base weights in memory: {footprint['stored_bytes'] / 2**20:.1f} MiB as stored "
        f"(fp32 would be {footprint['fp32_bytes'] / 2**20:.1f} MiB)")
    model = apply_method(model, cfg.method, cfg.train.gradient_checkpointing)
    trainable, total = count_parameters(model)
    log(f"method: {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%)")

    # ---- the output folder: created only now that every input has been checked
    fresh = mode == "fresh"
    if fresh and world.main:
        remove_dir(out_dir)  # reached only for an empty folder or with --overwrite on a weitiao run
        out_dir.mkdir(parents=True)
    try:
        if world.main:
            write_run_files(out_dir, cfg, template, splits.report, skipped)
        distributed.barrier()

        # ---- the base model on the test split (kept across a resume). Every process scores it: under FSDP each
        # forward needs all of them
        base_file = out_dir / "eval_base.json"
        base = distributed.on_main(lambda: json.loads(base_file.read_text()) if base_file.is_file() else None)
        if base is None and cfg.eval.compare_base and splits.test:
            with base_model_context(model) as base_model, distributed.gathered_for_inference(model, device, log):
                base = score_split(base_model, tokenizer, template, splits.test, encoded["test"], cfg, amp,
                                   "base").as_dict()
                if cfg.eval.forgetting:  # the forgetting check's "before"
                    base["general_text"] = general_text_losses(base_model, tokenizer, cfg.train.batch_size,
                                                               amp)
            if world.main:
                write_json(base_file, base)

        # ---- rephrasings of the test questions (eval.rephrase), made before training so that `rephrase.model:
        # base` is the model before training; kept across a resume
        rephrasings_file = out_dir / "rephrasings.json"
        rephrasings = distributed.on_main(lambda: rephrase.Rephrasings.from_dict(json.loads(
            rephrasings_file.read_text())) if rephrasings_file.is_file() else None)
        if rephrasings is None and cfg.eval.rephrase and splits.test:
            with base_model_context(model) as base_model, distributed.gathered_for_inference(model, device, log):
                rephrasings = rephrase.rephrasings_for(cfg, splits.test[:cfg.eval.max_samples or None], log,
                                                       base=(base_model, tokenizer, template),
                                                       seen=rephrase.seen_texts(splits.train, cfg.rephrase.target))
            if world.main:
                write_json(rephrasings_file, rephrasings.as_dict())
    except WeitiaoError:
        if fresh and world.main:
            remove_dir(out_dir)
        raise

    # ---- train (from the newest complete checkpoint when resuming)
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, log)
    interrupt = SaveOnInterrupt(log)
    timer = StepTimer()
    segments = segment_attention_used(cfg, model, device)
    trainer = build_trainer(cfg, model, tokenizer, encoded, out_dir, device, amp, [guard, interrupt, timer],
                            segments)
    start = distributed.on_main(lambda: last_complete(out_dir / "checkpoints", log)) if mode == "resume" else None
    if mode == "resume":
        log(f"resuming from {start}" if start else "no complete checkpoint yet: training from the start")
    t0 = time.time()
    try:
        with training_peak(device) as train_peak, training_attention(unwrapped(model), segments), \
                lora.autocast_input_casts_skipped(model, cfg.method, amp, strategy), \
                compiled_layers(unwrapped(model), cfg.train.compile) as compiled:
            if cfg.train.compile:
                log(f"train.compile: {compiled} decoder layers compiled; the first steps include the compilation"
                    if compiled else "train.compile: no repeated decoder layers found; training uncompiled")
            result = trainer.train(resume_from_checkpoint=str(start) if start else None)
    except (OSError, RuntimeError) as err:
        if not disk_full(err, out_dir):
            raise
        good = last_complete(out_dir / "checkpoints", log)
        raise WeitiaoError(f"the disk holding {out_dir} is full ({str(err).strip()[:200]}). The last complete "
                           f"checkpoint is {good or 'none'}; free some space and run the same command again to "
                           "resume") from None
    train_seconds = time.time() - t0
    if guard.stopped_at is not None:
        if world.main:
            write_json(out_dir / RUN_FILE, {"status": "failed", "reason": "non-finite gradients"})
        good = distributed.on_main(lambda: last_complete(out_dir / "checkpoints", log))
        raise WeitiaoError(f"training stopped at step {guard.stopped_at}: {guard.consecutive} non-finite gradients "
                           f"in a row ({guard.skipped} steps skipped in all). The last good checkpoint is "
                           f"{good or 'none'}. Lower train.learning_rate, or check the data for extreme rows.")
    if interrupt.requested:
        if world.main:
            write_json(out_dir / RUN_FILE, {"status": "interrupted", "step": trainer.state.global_step})
        good = distributed.on_main(lambda: last_complete(out_dir / "checkpoints", log))
        raise Interrupted(f"interrupted at step {trainer.state.global_step}: checkpoint saved in {good}; run the "
                          "same command again to resume")
    trainer.save_state()

    # ---- the tuned model on the test split (and on its rephrased questions, eval.rephrase)
    tuned = rephrased = None
    if splits.test:
        with distributed.gathered_for_inference(trainer.model, device, log):
            tuned = score_split(trainer.model, tokenizer, template, splits.test, encoded["test"], cfg, amp,
                                "tuned").as_dict()
            if cfg.eval.forgetting and base and "general_text" in base:
                tuned["general_text"] = general_text_losses(trainer.model, tokenizer, cfg.train.batch_size, amp)
            asked = splits.test[:tuned["rows"]]
            if rephrasings and rephrasings.coverage(asked, cfg.rephrase.k)["rephrased_rows"]:
                rephrased = score_rephrased(cfg, trainer.model, tokenizer, template, asked, rephrasings, amp,
                                            "tuned", tuned["per_row"])
            elif rephrasings:  # the run is not failed for it: the rejections were logged before training
                log("rephrased questions: none got a faithful rephrasing, so the rephrased gap is not measured")

    # ---- save: weights, state, metrics, curve, predictions. Every process takes part in saving the weights
    # (FSDP gathers each tensor's shards); rank 0 alone writes
    saved = save_trained(trainer.model, tokenizer, str(out_dir), cfg.method, main=world.main)
    if not world.main:
        return TrainResult({}, trainer.model, tokenizer, out_dir)
    history = trainer.state.log_history
    (out_dir / "trainer_state.json").write_text(
        (Path(trainer.args.output_dir) / "trainer_state.json").read_text(encoding="utf-8"), encoding="utf-8")
    plot_losses(history, out_dir / "loss_curve.png")
    trained_tokens = splits.report["train_trained_tokens"]
    # the epochs this process trained (a resumed run's timer starts at its checkpoint), over the time they took
    epochs_run, step_seconds = (trainer.state.epoch or 0) - timer.start_epoch, max(timer.seconds, 1e-9)
    batches = batch_kinds(getattr(trainer.data_collator, "inner", trainer.data_collator))
    metrics = {
        "method": cfg.method.name,
        "params": {"trainable": trainable, "total": total},
        "base_weights": footprint,
        "train": {
            "precision": precision_name(amp),
            **batches,
            "logits": logits_kind(trainer.compute_loss_func),
            # how padding-free rows kept their examples apart (train.packed_attention); none when none was made
            "packed_attention": None if batches["batches"] == "padded" else "segments" if segments else "mask",
            "compiled_layers": compiled,  # train.compile: decoder layers run compiled (0: eager)
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0, 4),
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            "train_loss_mean": round(result.training_loss, 6),
            "runtime_s": round(train_seconds, 1),
            "examples_per_s": round(result.metrics.get("train_samples_per_second", float("nan")), 3),
            "nonfinite_steps_skipped": guard.skipped,
            # the training steps alone (no validation, checkpoint saving or logging): the throughput's time base
            "step_seconds": round(timer.seconds, 4),
            # tokens through the model per second of training steps: all (prompt + answer) and those with a loss
            "tokens_per_s": round(splits.report["train_tokens"] * epochs_run / step_seconds, 1),
            "trained_tokens_per_s": round(trained_tokens * epochs_run / step_seconds, 1),
        },
        # rank 0's, in a multi-process run; train_*: the training phase alone, which the estimate is for
        "memory": {**peak_memory(device, train_peak), "estimate": estimate},
        "distributed": {"strategy": strategy, "processes": world.world_size, "nodes": world.nodes,
                        "backend": distributed.backend(cfg, device) if strategy != "single" else None,
                        **({"fsdp_sharding": cfg.distributed.fsdp_sharding} if strategy == "fsdp" else {}),
                        **sharding},
        "val": [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
        "best": {"checkpoint": trainer.state.best_model_checkpoint, "val_loss": trainer.state.best_metric},
        "test": {"rows": tuned["rows"] if tuned else 0, "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
        "data": {"train_rows": len(encoded["train"]), "train_tokens": splits.report["train_tokens"],
                 "train_trained_tokens": trained_tokens},
    }
    if tuned and "general_text" in tuned:
        metrics["forgetting"] = forgetting_summary(base["general_text"], tuned["general_text"])
        log(f"forgetting check: loss on general text {metrics['forgetting']['base_loss']:.4f} (base) -> "
            f"{metrics['forgetting']['tuned_loss']:.4f} (tuned)")
    if tuned:
        write_predictions(out_dir / "predictions.jsonl", prediction_rows(splits.test, tuned, base))
    if rephrased:
        write_json(out_dir / "rephrased.json", {"model": "tuned", "split": "test", "rows": tuned["rows"],
                                                "metrics": tuned["metrics"], "rephrased": rephrased})
        metrics["rephrased"] = {"rows": rephrased["rows"], "metrics": rephrased["metrics"]}
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / RUN_FILE, {"status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "saved": Path(saved).name})

    log("")
    if tuned:
        columns = {"base": base["metrics"], "tuned": tuned["metrics"]} if base else {"tuned": tuned["metrics"]}
        log(comparison_table(f"test split ({tuned['rows']} rows)", columns))
        if rephrased:
            log(comparison_table(f"tuned, {rephrased['questions']} questions asked {cfg.rephrase.k} other ways",
                                 {"original": tuned["metrics"], "rephrased": rephrased["metrics"]}))
            log(gap_lines(rephrased))
    measured = train_peak.get("train_cuda_max_allocated_bytes", train_peak.get("train_peak_rss_bytes"))
    if measured and estimate:  # rank 0's peak, against one process's share in a multi-process run
        share = estimate.get("per_process", estimate["total"])
        log(f"\nmemory while training: peak {measured / 2**30:.2f} GiB "
            f"({'CUDA allocated' if device == 'cuda' else 'RSS'}{', rank 0' if 'per_process' in estimate else ''}), "
            f"estimated {share / 2**30:.2f} GiB")
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    if tuned and base and cfg.eval.report:
        write_report(out_dir)
    return TrainResult(metrics, trainer.model, tokenizer, out_dir)


def logit_fraction(cfg: Config, encoded: list) -> float:
    """The share of a batch's positions that get logits, for the memory estimate: with the fused loss (trained
    tokens only, in any batch) or label-position logits on one-row (padding-free) batches, at most the most
    label-dense example's share; otherwise every position (a padded batch computes the union of its rows' label
    positions, and padding-free may turn out unusable)."""
    fused = memory_guard.fused_loss_planned(cfg)  # logits at trained tokens only, in any batch
    if not (fused or cfg.train.logits_at_labels_only and cfg.train.padding_free) \
            or cfg.method.name in PROMPT_LEARNING_METHODS:
        return 1.0
    return max(sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) / max(len(e.input_ids), 1) for e in encoded)


def precision_name(amp) -> str:
    """`fp32`, `bf16` or `fp16`: what the run computed in (an autocast dtype, or None for none)."""
    return "fp32" if amp is None else str(amp).replace("torch.", "").replace("bfloat16", "bf16").replace(
        "float16", "fp16")


def peak_memory(device: str, train_peak: dict | None = None) -> dict:
    """The process's peak memory so far: resident set size (CPU) and, on CUDA, the allocator's peaks; with
    `train_peak` (from `training_peak`), the training phase's own peaks too.

    The whole run's RSS peak is at least the training phase's. The two come from different kernel counters
    (getrusage's ru_maxrss and /proc's VmHWM, read at different times). Read after memory was freed, ru_maxrss
    was seen 184 KiB below the VmHWM read before it."""
    import resource

    import torch

    train_peak = train_peak or {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    peak = {"peak_rss_bytes": max(rss, train_peak.get("train_peak_rss_bytes", 0))}
    if device == "cuda":
        peak.update(cuda_max_allocated_bytes=torch.cuda.max_memory_allocated(),
                    cuda_max_reserved_bytes=torch.cuda.max_memory_reserved())
    return {**peak, **train_peak}


@contextmanager
def training_peak(device: str):
    """Yields a dict that, once the block ends, holds the block's own peak memory: VmHWM, the kernel's peak RSS
    of this process (`train_peak_rss_bytes`; Linux, where writing 5 to /proc/self/clear_refs resets it) and, on
    CUDA, the allocator's peaks. Without the reset, the peak also holds the base model's test-split generation,
    which runs first and can need more than training."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss_reset = True
    except OSError:
        rss_reset = False
    peak: dict = {}
    if rss_reset:
        peak["train_start_rss_bytes"] = proc_status_bytes("VmRSS")
    try:
        yield peak
    finally:
        if rss_reset and (hwm := proc_status_bytes("VmHWM")) is not None:
            peak["train_peak_rss_bytes"] = hwm
        if device == "cuda":
            peak.update(train_cuda_max_allocated_bytes=torch.cuda.max_memory_allocated(),
                        train_cuda_max_reserved_bytes=torch.cuda.max_memory_reserved())


def proc_status_bytes(field: str) -> int | None:
    """A size from /proc/self/status (VmRSS, VmHWM; reported in kB), or None where there is none."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            value = next((line.split()[1] for line in f if line.startswith(field + ":")), None)
    except OSError:
        return None
    return None if value is None else int(value) * 1024


def release_freed_memory() -> None:
    """Hands memory that earlier phases freed back to the OS (glibc's malloc_trim), so that training starts from
    what is alive. glibc keeps freed heap memory resident: after the base model's generation on the test split,
    the process held that phase's buffers, and the training phase's peak RSS counted them (measured on the
    quickstart: see README "Memory"). A no-op where the C library is not glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def disk_full(err: Exception, out_dir: Path) -> bool:
    """Whether a write error means the disk is full. torch.save reports it as a RuntimeError ("file write
    failed") without an errno, so the free space is checked too: less than the largest checkpoint means full."""
    import shutil

    if disk_full_error(err):
        return True
    ckpt_sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                  for p in (out_dir / "checkpoints").glob("checkpoint-*")]
    return shutil.disk_usage(out_dir).free < max(ckpt_sizes, default=1 << 20)


def check_same_config(cfg: Config, out_dir: Path) -> None:
    """A resumed run must use the config it started with (where its folder lives aside)."""
    import yaml

    saved_file = out_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    now = yaml.safe_load(dump_config(resolved(cfg)))

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    a, b = dict(flat(saved)), dict(flat(now))
    # a key the saved config lacks was added to weitiao after the run started: its default is what the run used
    defaults = dict(flat(yaml.safe_load(dump_config(Config()))))
    where = {"output.overwrite", "output.dir"}  # a run folder may be moved, e.g. to a bigger disk
    changed = sorted(k for k in a.keys() | b.keys()
                     if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k)) and k not in where)
    if changed:
        raise WeitiaoError(f"output.dir: {out_dir} holds an unfinished run with a different config "
                           f"({', '.join(changed)}); use the same config to resume, or --overwrite to start over")


def build_trainer(cfg: Config, model, tokenizer, encoded: dict, out_dir: Path, device: str, amp, callbacks: list,
                  segments: bool = False):
    """transformers' Trainer with our collator, validation, best-checkpoint tracking and early stopping.
    `segments`: padding-free rows will be trained under `weitiao_segments` attention (segment_attention_used)."""
    from transformers import EarlyStoppingCallback, Trainer

    t = cfg.train
    has_val = bool(encoded["val"])
    args = build_training_args(cfg, out_dir, device, amp, has_val, len(encoded["train"]),
                               **distributed.training_args(cfg, device))
    callbacks = list(callbacks)
    if t.early_stopping_patience and has_val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    if cfg.method.name in ADAPTER_METHODS and t.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: give checkpointed blocks an input that needs grad
    trainer_class = Trainer
    if distributed.strategy(cfg) == "fsdp":
        from weitiao.training.sharded_checkpoint import ShardedCheckpointTrainer

        trainer_class = ShardedCheckpointTrainer
    if cfg.method.name in PROMPT_LEARNING_METHODS:
        # peft's checkpoint of these adapters cannot restore their encoders; see training.prompt_learning
        from weitiao.training.prompt_learning import PromptLearningTrainer, SaveTrainableState

        trainer_class = PromptLearningTrainer
        callbacks.append(SaveTrainableState())
    fused, labels_only = fused_loss_usable(cfg, model), label_logits_only(cfg, model)
    collator, loss_func = training_collator(cfg, model, tokenizer, fused or labels_only, segments), None
    if fused:
        from weitiao.training.fused_loss import FusedLinearLoss, NoLogitsCollator

        collator, loss_func = NoLogitsCollator(collator), FusedLinearLoss(model, t.fused_loss_chunk)
        log(f"loss: LM head and cross-entropy fused, {t.fused_loss_chunk} positions at a time, at trained tokens "
            "only (train.fused_loss)")
    elif labels_only:
        from weitiao.training.label_logits import LabelPositionsCollator, label_positions_loss

        collator, loss_func = LabelPositionsCollator(collator), label_positions_loss
        log("logits: only at positions that predict a trained token (train.logits_at_labels_only)")
    return trainer_class(
        model=model,
        args=args,
        train_dataset=to_hf_dataset(encoded["train"]),
        eval_dataset=to_hf_dataset(encoded["val"]) if has_val else None,
        data_collator=collator,
        compute_loss_func=loss_func,
        callbacks=callbacks,
    )


def batch_kinds(collator) -> dict:
    """`batches`: padding_free, padded or mixed; with the counts of each kind (validation batches included)."""
    if isinstance(collator, CheaperBatchCollator):
        counts = collator.counts
        kind = "mixed" if all(counts.values()) else "padded" if counts["padded"] else "padding_free"
        return {"batches": kind, "batch_counts": dict(counts)}
    return {"batches": "padding_free" if isinstance(collator, PaddingFreeCollator) else "padded"}


def logits_kind(loss_func) -> str:
    """How the run computed its logits: `fused` (chunked with the loss, train.fused_loss), `label_positions`
    (train.logits_at_labels_only) or `all_positions`."""
    if loss_func is None:
        return "all_positions"
    return "label_positions" if getattr(loss_func, "__name__", "") == "label_positions_loss" else "fused"


def label_logits_only(cfg: Config, model) -> bool:
    """Whether the LM head runs at label positions only (train.logits_at_labels_only, where the model allows)."""
    from weitiao.training.label_logits import supports_logits_to_keep

    return (cfg.train.logits_at_labels_only and cfg.method.name not in PROMPT_LEARNING_METHODS
            and supports_logits_to_keep(model))


def fused_loss_usable(cfg: Config, model) -> bool:
    """Whether the chunked head-and-loss pass runs (train.fused_loss): not with virtual tokens, not where the head's
    weight is sharded outside the forward pass (FSDP, ZeRO-3), and only where the model passes `usable`'s check."""
    from weitiao.training import fused_loss

    return memory_guard.fused_loss_planned(cfg) and fused_loss.usable(model)


def training_collator(cfg: Config, model, tokenizer, labels_only: bool, segments: bool = False):
    """Padding-free batches where the config allows them, the loaded model keeps packed examples apart (checked
    under the attention training will use), and a batch is cheaper packed than padded (`batch_cost`); padded
    batches otherwise."""
    from weitiao.training.padding_free import keeps_examples_apart

    if not cfg.train.padding_free or cfg.method.name in PROMPT_LEARNING_METHODS:
        return PadCollator(tokenizer.pad_token_id)
    cost = batch_cost(model, labels_only, segments, cfg.train.padding_free_multiple)
    collator = CheaperBatchCollator(tokenizer.pad_token_id, cost)
    with training_attention(unwrapped(model), segments):  # the check runs on the packed rows training will get
        apart = keeps_examples_apart(model, len(tokenizer), collator=collator.packed)
    if apart:
        attention = ("one attention call per example (train.packed_attention: segments)" if segments
                     else "variable-length attention" if cost.varlen
                     else "a packed row attends over its whole length")
        log(f"batches: padding-free where cheaper than padded, batch by batch (train.padding_free; {attention})")
        return collator
    log(f"batches: padded: {type(model).__name__} mixes examples packed into one row, so padding-free batches "
        "are not used")
    return PadCollator(tokenizer.pad_token_id)


# Attention's cost per query-key pair it scores, in units of the theoretical 4 L d / (2 N) (its FLOPs against a
# token's through the linear layers; L layers, d attention width, N linear weights). Fitted on this project's
# 2-core AVX2 CPU, SmolLM2-135M LoRA, fp32, forward + backward of 8 rows of 48-384 tokens (about 6.9 ms a token):
# a packed row under its block-diagonal mask cost 1.3 units a pair (every pair of the T x T matrix computed), a
# padded row under a causal kernel 1.1 units per pair it scores. Packed then won only where padding was wasted.
PAIR_PACKED, PAIR_PADDED = 1.3, 1.1


def batch_cost(model, labels_only: bool, segments: bool = False, packed_multiple: int = 1) -> BatchCost:
    """The cost model of `CheaperBatchCollator` for this model, from its shape (see data.dataset.BatchCost). A
    model whose config does not name its layers and heads the transformers way gets attention at no cost, so
    every batch is packed (what train.padding_free did before the cost model). `segments`: packed rows are
    trained under `weitiao_segments` attention, which scores each example's own pairs only."""
    config = model.config
    try:
        heads = config.num_attention_heads
        width = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
        layers = config.num_hidden_layers
        embed, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    except (AttributeError, NotImplementedError, TypeError):
        return BatchCost(pair_packed=0.0, pair_padded=0.0, head=0.0, labels_only=labels_only,
                         packed_multiple=packed_multiple)
    n_head = head.weight.numel() if head is not None else 0
    tied = head is not None and head.weight is embed
    n_linear = max(1, sum(p.numel() for p in model.parameters()) - embed.numel() - (0 if tied else n_head))
    unit = 4 * layers * width / (2 * n_linear)
    varlen = segments or getattr(config, "_attn_implementation", None) in ("flash_attention_2", "flash_attention_3")
    return BatchCost(pair_packed=PAIR_PACKED * unit, pair_padded=PAIR_PADDED * unit, head=n_head / n_linear,
                     labels_only=labels_only, varlen=varlen, packed_multiple=packed_multiple)


def segment_attention_used(cfg: Config, model, device: str) -> bool:
    """Whether padding-free rows are trained with one attention call per example (train.packed_attention; see
    training.segment_attention): asked for, or `auto` on a CPU, for a model on transformers' sdpa attention."""
    from weitiao.training import segment_attention

    choice, inner = cfg.train.packed_attention, unwrapped(model)
    if choice == "mask" or not cfg.train.padding_free or cfg.method.name in PROMPT_LEARNING_METHODS:
        return False
    if not segment_attention.usable(inner):
        if choice == "segments":
            log(f"train.packed_attention: segments needs the model on sdpa attention through transformers' "
                f"AttentionInterface; {type(inner).__name__} uses "
                f"{getattr(inner.config, '_attn_implementation', None)!r}, so packed rows use its mask")
        return False
    return choice == "segments" or device == "cpu"


def build_training_args(cfg: Config, out_dir: Path, device: str, amp, has_val: bool, n_train: int,
                        args_class=None, **extra):
    """transformers' TrainingArguments from the train section: validation, checkpoints, best-model tracking.

    `args_class` is a subclass such as TRL's DPOConfig, whose own settings come in `extra`; every field set here is
    set explicitly, so a subclass's different defaults (TRL turns checkpointing and bf16 on) do not apply."""
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    strategy = "steps" if t.eval_steps > 0 else "epoch"
    kwargs = dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=math.ceil(t.warmup_ratio * planned_steps(cfg, n_train)),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=amp is torch.bfloat16,
        fp16=amp is torch.float16,
        **checkpointing_args(t.gradient_checkpointing),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy=strategy if has_val else "no",
        eval_steps=t.eval_steps if t.eval_steps > 0 else None,
        save_strategy=strategy,
        save_steps=t.eval_steps if t.eval_steps > 0 else None,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_val and t.load_best_at_end,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        use_cpu=device == "cpu",
        report_to="none",
        remove_unused_columns=False,
        prediction_loss_only=True,  # validation needs the loss only; keeping logits costs B x T x vocab floats
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    return (args_class or TrainingArguments)(**{**kwargs, **extra})


def checkpointing_args(enabled: bool) -> dict:
    """Activation (gradient) checkpointing under the name this transformers version uses."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    # non-reentrant checkpointing works with frozen inputs (LoRA) and is the one PyTorch recommends
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def planned_steps(cfg: Config, n_train: int) -> int:
    t = cfg.train
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = math.ceil(n_train / (t.batch_size * t.grad_accum))
    return max(1, math.ceil(per_epoch * t.epochs))
