"""Supervised fine-tuning, top to bottom: config -> data -> model -> method -> base eval -> train -> eval -> save.

Everything the user can get wrong (config, data rows, model path, template, method settings) is checked before the
output folder is created, so a bad input leaves nothing behind. The run folder describes itself: resolved config,
library versions, the chat template, the trainer state, metrics and a loss curve.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from weitiao.config import Config, dump_config, resolved
from weitiao.data.dataset import PadCollator, encode_split, load_splits, to_hf_dataset
from weitiao.data.templates import resolve_template
from weitiao.errors import WeitiaoError
from weitiao.methods import ADAPTER_METHODS, apply_method, count_parameters, save_trained
from weitiao.models.loading import load_model, load_tokenizer, local_folder, pick_device, pick_dtype, resolve_source
from weitiao.workflows.common import (
    RUN_FILE, autocast_dtype, base_model_context, check_output_dir, comparison_table, log, plot_losses,
    remove_dir, score_split, versions, write_json,
)


@dataclass
class TrainResult:
    metrics: dict  # what metrics.json holds
    model: object  # the trained model (a PeftModel for adapter methods)
    tokenizer: object
    out_dir: Path


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    out_dir = Path(cfg.output.dir)
    mode = check_output_dir(out_dir, overwrite or cfg.output.overwrite, resume)

    # ---- data: every row read and checked before the model is loaded
    splits = load_splits(cfg.data, cfg.base_dir)
    log(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test rows "
        f"(format {cfg.data.format}; {splits.report.get('train_duplicates_dropped', 0)} duplicates and "
        f"{splits.report['train_empty_rows_dropped']} empty rows dropped)")

    # ---- tokenizer and template, then token ids and labels
    source = resolve_source(cfg.model.name_or_path)
    folder = local_folder(source, log)
    tokenizer = load_tokenizer(folder, cfg.model.trust_remote_code)
    template = resolve_template(tokenizer, cfg.model.chat_template)
    encoded = {name: encode_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report)
               for name in ("train", "val", "test")}
    log(f"template: {template.name} (end of turn {template.eot!r}); train tokens {splits.report['train_tokens']} "
        f"({splits.report['train_trained_tokens']} with loss); truncated {splits.report['train_truncated']}, "
        f"dropped as over-long {splits.report['train_overlong_dropped']}")
    if not encoded["train"]:
        raise WeitiaoError("data: every training row was dropped as over-long; raise data.max_length")

    # ---- model and method
    device = pick_device(cfg.model.device)
    amp = autocast_dtype(cfg.train.precision, device)
    t0 = time.time()
    model = load_model(folder, pick_dtype(cfg.model.dtype, device), device, cfg.model.trust_remote_code,
                       cfg.model.attn_implementation)
    log(f"model: {source.label} ({type(model).__name__}) on {device}, loaded in {time.time() - t0:.1f}s; "
        f"precision {'fp32' if amp is None else str(amp).replace('torch.', '') + ' autocast'}")
    model = apply_method(model, cfg.method)
    trainable, total = count_parameters(model)
    log(f"method: {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%)")

    # ---- the output folder: created only now that every input has been checked
    fresh = mode == "fresh"
    if fresh:
        remove_dir(out_dir)  # reached only for an empty folder or with --overwrite on a weitiao run
        out_dir.mkdir(parents=True)
    try:
        write_json(out_dir / RUN_FILE, {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        (out_dir / "config.yaml").write_text(dump_config(resolved(cfg)), encoding="utf-8")
        write_json(out_dir / "versions.json", versions())
        (out_dir / "chat_template.jinja").write_text(template.jinja, encoding="utf-8")
        write_json(out_dir / "template.json", template.describe())
        write_json(out_dir / "data_report.json", splits.report)

        # ---- the base model on the test split (kept across a resume)
        base = None
        base_file = out_dir / "eval_base.json"
        if cfg.eval.compare_base and splits.test:
            if base_file.is_file():
                base = json.loads(base_file.read_text())
            else:
                with base_model_context(model):
                    base = score_split(model, tokenizer, template, splits.test, encoded["test"], cfg, amp,
                                       "base").as_dict()
                write_json(base_file, base)
    except WeitiaoError:
        if fresh:
            remove_dir(out_dir)
        raise

    # ---- train
    trainer = build_trainer(cfg, model, tokenizer, encoded, out_dir, device, amp)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
    train_seconds = time.time() - t0
    trainer.save_state()

    # ---- the tuned model on the test split
    tuned = None
    if splits.test:
        tuned = score_split(trainer.model, tokenizer, template, splits.test, encoded["test"], cfg, amp,
                            "tuned").as_dict()

    # ---- save: weights, state, metrics, curve, predictions
    saved = save_trained(trainer.model, tokenizer, str(out_dir), cfg.method)
    history = trainer.state.log_history
    (out_dir / "trainer_state.json").write_text(
        (Path(trainer.args.output_dir) / "trainer_state.json").read_text(encoding="utf-8"), encoding="utf-8")
    plot_losses(history, out_dir / "loss_curve.png")
    trained_tokens = splits.report["train_trained_tokens"]
    metrics = {
        "method": cfg.method.name,
        "params": {"trainable": trainable, "total": total},
        "train": {
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0, 4),
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            "train_loss_mean": round(result.training_loss, 6),
            "runtime_s": round(train_seconds, 1),
            "examples_per_s": round(result.metrics.get("train_samples_per_second", float("nan")), 3),
        },
        "val": [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
        "best": {"checkpoint": trainer.state.best_model_checkpoint, "val_loss": trainer.state.best_metric},
        "test": {"rows": tuned["rows"] if tuned else 0, "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
        "data": {"train_rows": len(encoded["train"]), "train_trained_tokens": trained_tokens},
    }
    if tuned:
        rows = []
        for i, ex in enumerate(splits.test[: len(tuned["predictions"])]):
            row = {"where": ex.where, "prompt": ex.messages[-2][1], "reference": ex.messages[-1][1],
                   "tuned": tuned["predictions"][i], "tuned_scores": tuned["per_row"][i]}
            if base and i < len(base["predictions"]):
                row.update(base=base["predictions"][i], base_scores=base["per_row"][i])
            rows.append(row)
        (out_dir / "predictions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / RUN_FILE, {"status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "saved": Path(saved).name})

    log("")
    if tuned:
        columns = {"base": base["metrics"], "tuned": tuned["metrics"]} if base else {"tuned": tuned["metrics"]}
        log(comparison_table(f"test split ({tuned['rows']} rows)", columns))
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    return TrainResult(metrics, trainer.model, tokenizer, out_dir)


def build_trainer(cfg: Config, model, tokenizer, encoded: dict, out_dir: Path, device: str, amp):
    """transformers' Trainer with our collator, validation, best-checkpoint tracking and early stopping."""
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    t = cfg.train
    has_val = bool(encoded["val"])
    strategy = "steps" if t.eval_steps > 0 else "epoch"
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=math.ceil(t.warmup_ratio * planned_steps(cfg, len(encoded["train"]))),
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
    callbacks = []
    if t.early_stopping_patience and has_val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    if cfg.method.name in ADAPTER_METHODS and t.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: give checkpointed blocks an input that needs grad
    return Trainer(
        model=model,
        args=args,
        train_dataset=to_hf_dataset(encoded["train"]),
        eval_dataset=to_hf_dataset(encoded["val"]) if has_val else None,
        data_collator=PadCollator(tokenizer.pad_token_id),
        callbacks=callbacks,
    )


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
