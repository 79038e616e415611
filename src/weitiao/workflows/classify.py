"""Sequence classification, top to bottom: config -> data -> labels -> model + head -> method -> base eval ->
train -> eval -> save.

The same skeleton as `sft.py`; what differs: rows are text + label, the model gets a new classification head
(trained in full, also under LoRA), the loss may weight classes, and evaluation reports accuracy, macro-F1, per-class
scores and a confusion matrix instead of generations.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from weitiao.config import Config, dump_config, resolved
from weitiao.data.dataset import encode_labelled, label_names, load_splits
from weitiao.errors import Interrupted, WeitiaoError
from weitiao.memory import guard as memory_guard
from weitiao.evaluation.classification import balanced_class_weights, classification_metrics, plot_confusion
from weitiao.methods import apply_method, count_parameters, save_trained, weights_footprint
from weitiao.models.loading import load_classifier, load_tokenizer, local_folder, pick_device, pick_dtype, resolve_source
from weitiao.training.checkpoints import last_complete
from weitiao.workflows.common import (
    RUN_FILE, autocast_dtype, base_model_context, check_output_dir, comparison_table, log, plot_losses, remove_dir,
    versions, write_json, write_report,
)
from weitiao.workflows.sft import (TrainResult, build_training_args, check_same_config, peak_memory,
                                    precision_name, training_peak)


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    out_dir = Path(cfg.output.dir)
    mode = check_output_dir(out_dir, overwrite or cfg.output.overwrite, resume)

    # ---- data and classes: every row read and checked before the model is loaded
    splits = load_splits(cfg.data, cfg.base_dir, skip_bad_rows=cfg.data.skip_bad_rows)
    labels = label_names(cfg.data, splits)
    cfg.data.labels = labels  # the run folder's config then fixes the head's output order
    if mode == "resume":
        check_same_config(cfg, out_dir)
        log(f"resuming the unfinished run in {out_dir} (--overwrite starts over)")
    log(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test rows; "
        f"{len(labels)} classes: {', '.join(labels)}")

    # ---- tokenizer, then token ids and label indices
    source = resolve_source(cfg.model.name_or_path, cfg.model.convert_pickle)
    folder = local_folder(source, log, cfg.model.trust_remote_code)
    tokenizer = load_tokenizer(folder, cfg.model.trust_remote_code)
    encoded = {name: encode_labelled(getattr(splits, name), tokenizer, labels, cfg.data.max_length, name,
                                     splits.report) for name in ("train", "val", "test")}
    counts = list(splits.report["train_label_counts"].values())
    log("train rows per class: " + ", ".join(f"{k} {v}" for k, v in splits.report["train_label_counts"].items()))

    # ---- memory: estimated before any weight is loaded; stop here when it cannot fit
    device = pick_device(cfg.model.device)
    longest = max(len(e["input_ids"]) for e in encoded["train"] + encoded["val"])
    estimate = memory_guard.check(cfg, folder, device, -(-longest // 8) * 8, log)

    # ---- model with a new head, and method (transformers' training stack is imported only now, after every
    # config and data check: it takes about 10 s to import on a small CPU)
    from transformers import set_seed

    from weitiao.training.callbacks import NonFiniteGuard, SaveOnInterrupt

    amp = autocast_dtype(cfg.train.precision, device)
    set_seed(cfg.train.seed)  # the new head's weights must be the same in every run
    model = load_classifier(folder, labels, pick_dtype(cfg.model.dtype, device), device,
                            cfg.model.trust_remote_code, cfg.model.attn_implementation, tokenizer.pad_token_id)
    log(f"model: {source.label} ({type(model).__name__}, new head of {len(labels)} outputs) on {device}")
    footprint = weights_footprint(model)
    model = apply_method(model, cfg.method, cfg.train.gradient_checkpointing)
    trainable, total = count_parameters(model)
    log(f"method: {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%)")
    weights = balanced_class_weights(counts) if cfg.train.class_weights == "balanced" else None
    if weights:
        log("class weights: " + ", ".join(f"{k} {w:.3f}" for k, w in zip(labels, weights)))

    # ---- the output folder: created only now that every input has been checked
    fresh = mode == "fresh"
    if fresh:
        remove_dir(out_dir)
        out_dir.mkdir(parents=True)
    write_json(out_dir / RUN_FILE, {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (out_dir / "config.yaml").write_text(dump_config(resolved(cfg)), encoding="utf-8")
    write_json(out_dir / "versions.json", versions())
    write_json(out_dir / "data_report.json", splits.report)

    # ---- the base model (pretrained body, untrained head) on the test split
    batch_size = cfg.eval.generation.batch_size
    base = None
    if cfg.eval.compare_base and encoded["test"]:
        with base_model_context(model) as base_model:
            base = score_classes(base_model, tokenizer, encoded["test"], labels, batch_size, amp, "base")

    # ---- train
    guard, interrupt = NonFiniteGuard(cfg.train.max_nonfinite_steps, log), SaveOnInterrupt(log)
    trainer = build_trainer(cfg, model, tokenizer, encoded, out_dir, device, amp, [guard, interrupt], weights)
    start = last_complete(out_dir / "checkpoints", log) if mode == "resume" else None
    t0 = time.time()
    with training_peak(device) as train_peak:
        result = trainer.train(resume_from_checkpoint=str(start) if start else None)
    train_seconds = time.time() - t0
    if guard.stopped_at is not None:
        write_json(out_dir / RUN_FILE, {"status": "failed", "reason": "non-finite gradients"})
        raise WeitiaoError(f"training stopped at step {guard.stopped_at}: {guard.consecutive} non-finite gradients "
                           "in a row; lower train.learning_rate")
    if interrupt.requested:
        write_json(out_dir / RUN_FILE, {"status": "interrupted", "step": trainer.state.global_step})
        raise Interrupted(f"interrupted at step {trainer.state.global_step}; run the same command again to resume")
    trainer.save_state()

    # ---- the tuned model on the test split
    tuned = score_classes(trainer.model, tokenizer, encoded["test"], labels, batch_size, amp, "tuned") \
        if encoded["test"] else None

    # ---- save: weights, state, metrics, curve, confusion matrix, predictions
    saved = save_trained(trainer.model, tokenizer, str(out_dir), cfg.method)
    history = trainer.state.log_history
    plot_losses(history, out_dir / "loss_curve.png")
    metrics = {
        "task": "classify",
        "method": cfg.method.name,
        "labels": labels,
        "params": {"trainable": trainable, "total": total},
        "base_weights": footprint,
        "train": {
            "precision": precision_name(amp),
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0, 4),
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            "train_loss_mean": round(result.training_loss, 6),
            "runtime_s": round(train_seconds, 1),
            "tokens_per_s": round(splits.report["train_tokens"] * (trainer.state.epoch or 0) / train_seconds, 1),
            "class_weights": weights,
        },
        "memory": {**peak_memory(device, train_peak), "estimate": estimate},
        "val": [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
        "best": {"checkpoint": trainer.state.best_model_checkpoint, "val_loss": trainer.state.best_metric},
        "test": {"rows": len(encoded["test"]), "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
    }
    if tuned:
        write_json(out_dir / "confusion_matrix.json", {"labels": labels, "rows_true_columns_predicted": True,
                                                        "tuned": tuned["confusion"],
                                                        "base": base["confusion"] if base else None})
        plot_confusion(tuned["confusion"], labels, out_dir / "confusion_matrix.png",
                       f"test split, tuned (accuracy {tuned['metrics']['accuracy']:.3f})")
        rows = [{"where": ex.where, "text": ex.text, "label": ex.label, "tuned": labels[p]}
                | ({"base": labels[base["predictions"][i]]} if base else {})
                for i, (ex, p) in enumerate(zip(splits.test, tuned["predictions"]))]
        (out_dir / "predictions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / RUN_FILE, {"status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "saved": Path(saved).name})
    log("")
    if tuned:
        columns = {"base": base["metrics"], "tuned": tuned["metrics"]} if base else {"tuned": tuned["metrics"]}
        log(comparison_table(f"test split ({len(encoded['test'])} rows)", columns))
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    if tuned and base and cfg.eval.report:
        write_report(out_dir)
    return TrainResult(metrics, trainer.model, tokenizer, out_dir)


@torch.no_grad()
def score_classes(model, tokenizer, encoded: list[dict], labels: list[str], batch_size: int, amp_dtype,
                  label: str) -> dict:
    """Loss (unweighted mean cross-entropy), accuracy, macro-F1 and the confusion matrix on `encoded`."""
    model.eval()
    device = next(model.parameters()).device
    collate = LabelledCollator(tokenizer)
    predictions, loss_sum = [], 0.0
    for start in range(0, len(encoded), batch_size):
        batch = collate([dict(e) for e in encoded[start:start + batch_size]]).to(device)
        gold = batch.pop("labels")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(**batch).logits.float()  # (B, n_classes)
        loss_sum += torch.nn.functional.cross_entropy(logits, gold, reduction="sum").item()
        predictions += logits.argmax(-1).tolist()
    golds = [e["labels"] for e in encoded]
    scores = classification_metrics(golds, predictions, labels)
    metrics = {"loss": round(loss_sum / len(encoded), 6), "accuracy": round(scores["accuracy"], 6),
               "macro_f1": round(scores["macro_f1"], 6)}
    log(f"[{label}] {len(encoded)} rows: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return {"metrics": metrics, "predictions": predictions, "confusion": scores["confusion"],
            "per_class": scores["per_class"]}


def build_trainer(cfg: Config, model, tokenizer, encoded: dict, out_dir: Path, device: str, amp, callbacks: list,
                  class_weights: list[float] | None):
    from transformers import EarlyStoppingCallback, Trainer

    has_val = bool(encoded["val"])
    args = build_training_args(cfg, out_dir, device, amp, has_val, len(encoded["train"]))
    callbacks = list(callbacks)
    if cfg.train.early_stopping_patience and has_val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    loss_func = None
    if class_weights:
        weight = torch.tensor(class_weights, dtype=torch.float32, device=model.device)

        def loss_func(outputs, labels, num_items_in_batch=None):  # weighted mean cross-entropy over the batch
            return torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weight)

    return Trainer(model=model, args=args, train_dataset=to_hf_dataset_labelled(encoded["train"]),
                   eval_dataset=to_hf_dataset_labelled(encoded["val"]) if has_val else None,
                   data_collator=LabelledCollator(tokenizer), callbacks=callbacks, compute_loss_func=loss_func)


class LabelledCollator:
    """Pads token ids with the tokenizer's pad token (and side), builds the attention mask, stacks the labels."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]):
        batch = self.tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt",
                                   pad_to_multiple_of=8)
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch


def to_hf_dataset_labelled(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows],
                              "length": [len(r["input_ids"]) for r in rows]})
