"""Sequence classification: prepare -> load -> score_base -> fit -> score_tuned -> save (see weitiao.stages).

What is particular to classification: rows are text + label; the model gets a new classification head (trained in
full, also under LoRA); the loss may weight classes; the held-out rows are scored by accuracy, macro-F1,
per-class scores and a confusion matrix instead of generated answers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from weitiao.config import Config
from weitiao.console import log
from weitiao.data.dataset import (LabelledCollator, encode_labelled, label_names, load_splits,
                                  to_hf_dataset_labelled)
from weitiao.evaluation.classification import balanced_class_weights, plot_confusion, score_classes
from weitiao.evaluation.scoring import base_model_context
from weitiao.memory import guard as memory_guard
from weitiao.methods import save_trained, weights_footprint
from weitiao.models.loading import load_classifier, pick_device, pick_dtype
from weitiao.models.precision import autocast_dtype, precision_name
from weitiao.models.resolve import find_tokenizer
from weitiao.runs import TrainResult, decide_mode, run_folder, write_json, write_jsonl
from weitiao.stages import Built, Prepared, conclude, with_method
from weitiao.training.arguments import build_training_args
from weitiao.training.fit import Fitted, fit


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    device = pick_device(cfg.model.device)
    prepared = prepare(cfg, device)  # first here: the classes it finds are part of the config a resume must match
    mode = decide_mode(cfg, overwrite, resume)
    built = load(cfg, prepared)
    with run_folder(cfg, mode, None, prepared.splits.report, None) as out_dir:
        base = score_base(cfg, prepared, built)
    fitted = train(cfg, prepared, built, out_dir, mode == "resume")
    tuned = score_tuned(cfg, prepared, built, fitted)
    return save(cfg, prepared, built, fitted, base, tuned)


def prepare(cfg: Config, device: str) -> Prepared:
    """Every row read and checked, the classes found (in the order the run folder's config then fixes for the
    head's outputs), token ids and label indices made, and the memory estimated before any weight is loaded."""
    splits = load_splits(cfg.data, cfg.base_dir, skip_bad_rows=cfg.data.skip_bad_rows)
    labels = label_names(cfg.data, splits)
    cfg.data.labels = labels
    log(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test rows; "
        f"{len(labels)} classes: {', '.join(labels)}")
    source, folder, tokenizer = find_tokenizer(cfg)
    splits.report["model_source"] = source.describe()
    encoded = {name: encode_labelled(getattr(splits, name), tokenizer, labels, cfg.data.max_length, name,
                                     splits.report) for name in ("train", "val", "test")}
    log("train rows per class: " + ", ".join(f"{k} {v}" for k, v in splits.report["train_label_counts"].items()))
    longest = max(len(e["input_ids"]) for e in encoded["train"] + encoded["val"])
    estimate = memory_guard.check(cfg, folder, device, -(-longest // 8) * 8, log)
    return Prepared(device, splits, None, source, folder, tokenizer, None, encoded, estimate)


def load(cfg: Config, prepared: Prepared) -> Built:
    """The body with a new head of one output per class (seeded: the same head in every run), then the method,
    and the class weights (train.class_weights)."""
    from transformers import set_seed

    labels, device = cfg.data.labels, prepared.device
    set_seed(cfg.train.seed)
    model = load_classifier(prepared.folder, labels, pick_dtype(cfg.model.dtype, device), device,
                            cfg.model.trust_remote_code, cfg.model.attn_implementation,
                            prepared.tokenizer.pad_token_id)
    log(f"model: {prepared.source.label} ({type(model).__name__}, new head of {len(labels)} outputs) on {device}")
    built = with_method(cfg, model, weights_footprint(model), autocast_dtype(cfg.train.precision, device))
    counts = list(prepared.splits.report["train_label_counts"].values())
    weights = balanced_class_weights(counts) if cfg.train.class_weights == "balanced" else None
    if weights:
        log("class weights: " + ", ".join(f"{k} {w:.3f}" for k, w in zip(labels, weights)))
    built.extra["class_weights"] = weights
    return built


def score_base(cfg: Config, prepared: Prepared, built: Built) -> dict | None:
    """The pretrained body with its untrained head on the test split."""
    if not (cfg.eval.compare_base and prepared.encoded["test"]):
        return None
    with base_model_context(built.model) as base_model:
        return score_classes(base_model, prepared.tokenizer, prepared.encoded["test"], cfg.data.labels,
                             cfg.eval.generation.batch_size, built.amp, "base")


def train(cfg: Config, prepared: Prepared, built: Built, out_dir: Path, resume: bool) -> Fitted:
    """`fit` on transformers' Trainer with padded labelled batches and, with class weights, a weighted loss."""
    from transformers import Trainer

    encoded, model, weights = prepared.encoded, built.model, built.extra["class_weights"]
    has_val = bool(encoded["val"])
    args = build_training_args(cfg, out_dir, prepared.device, built.amp, has_val, len(encoded["train"]))
    loss_func = None
    if weights:
        weight = torch.tensor(weights, dtype=torch.float32, device=model.device)

        def loss_func(outputs, labels, num_items_in_batch=None):  # weighted mean cross-entropy over the batch
            return torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weight)

    trainer = Trainer(model=model, args=args, train_dataset=to_hf_dataset_labelled(encoded["train"]),
                      eval_dataset=to_hf_dataset_labelled(encoded["val"]) if has_val else None,
                      data_collator=LabelledCollator(prepared.tokenizer), compute_loss_func=loss_func)
    return fit(trainer, cfg, out_dir, prepared.device, resume)


def score_tuned(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted) -> dict | None:
    """The trained classifier on the test split."""
    if not prepared.encoded["test"]:
        return None
    return score_classes(fitted.model, prepared.tokenizer, prepared.encoded["test"], cfg.data.labels,
                         cfg.eval.generation.batch_size, built.amp, "tuned")


def save(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, tuned) -> TrainResult:
    """Weights, metrics, the confusion matrix and per-row predictions, then the comparison and the report."""
    out_dir, labels = Path(cfg.output.dir), cfg.data.labels
    saved = save_trained(fitted.model, prepared.tokenizer, str(out_dir), cfg.method)
    metrics = {
        "task": "classify",
        "method": cfg.method.name,
        "labels": labels,
        "params": built.params(),
        "base_weights": built.footprint,
        "train": {**fitted.train_metrics(precision_name(built.amp)),
                  "tokens_per_s": round(fitted.per_second(prepared.splits.report["train_tokens"]), 1),
                  "class_weights": built.extra["class_weights"]},
        **fitted.common_metrics(prepared.device, prepared.estimate),
        "test": {"rows": len(prepared.encoded["test"]), "base": base["metrics"] if base else None,
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
                for i, (ex, p) in enumerate(zip(prepared.splits.test, tuned["predictions"]))]
        write_jsonl(out_dir / "predictions.jsonl", rows)
    conclude(cfg, out_dir, fitted.trainer, metrics, saved, base, tuned, len(prepared.encoded["test"]))
    return TrainResult(metrics, fitted.model, prepared.tokenizer, out_dir)
