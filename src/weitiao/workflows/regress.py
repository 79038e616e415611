"""Sequence regression: prepare -> load -> score_base -> fit -> score_tuned -> save (see weitiao.stages).

What is particular to regression: rows are text + a numeric label; the model gets a new head of one output (trained
in full, also under LoRA) and learns with mean squared error (transformers' problem_type "regression"); the held-out
rows are scored by MSE, MAE, Pearson and Spearman, before and after, instead of generated answers.
"""
from __future__ import annotations

from pathlib import Path

from weitiao.config import Config
from weitiao.console import log
from weitiao.data.dataset import (LabelledCollator, encode_labelled, load_splits, score_labels,
                                  to_hf_dataset_labelled)
from weitiao.evaluation.regression import plot_scores, score_regression
from weitiao.evaluation.scoring import base_model_context
from weitiao.memory import guard as memory_guard
from weitiao.methods import save_trained, weights_footprint
from weitiao.models.loading import load_classifier, pick_device, pick_dtype
from weitiao.models.precision import autocast_dtype, precision_name
from weitiao.models.resolve import find_tokenizer
from weitiao.runs import TrainResult, decide_mode, run_folder, write_jsonl
from weitiao.stages import Built, Prepared, conclude, with_method
from weitiao.training.arguments import build_training_args
from weitiao.training.fit import Fitted, fit


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    device = pick_device(cfg.model.device)
    prepared = prepare(cfg, device)
    mode = decide_mode(cfg, overwrite, resume)
    built = load(cfg, prepared)
    with run_folder(cfg, mode, None, prepared.splits.report, None) as out_dir:
        base = score_base(cfg, prepared, built)
    fitted = train(cfg, prepared, built, out_dir, mode == "resume")
    tuned = score_tuned(cfg, prepared, built, fitted)
    return save(cfg, prepared, built, fitted, base, tuned)


def prepare(cfg: Config, device: str) -> Prepared:
    """Every row read and its label checked to be a number, token ids made, and the memory estimated before any
    weight is loaded."""
    splits = load_splits(cfg.data, cfg.base_dir, skip_bad_rows=cfg.data.skip_bad_rows)
    score_labels(splits)
    log(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test rows")
    source, folder, tokenizer = find_tokenizer(cfg)
    splits.report["model_source"] = source.describe()
    encoded = {name: encode_labelled(getattr(splits, name), tokenizer, None, cfg.data.max_length, name,
                                     splits.report) for name in ("train", "val", "test")}
    log(f"train scores: {splits.report['train_scores']}")
    longest = max(len(e["input_ids"]) for e in encoded["train"] + encoded["val"])
    estimate = memory_guard.check(cfg, folder, device, -(-longest // 8) * 8, log)
    return Prepared(device, splits, None, source, folder, tokenizer, None, encoded, estimate)


def load(cfg: Config, prepared: Prepared) -> Built:
    """The body with a new one-output head (seeded: the same head in every run), then the method."""
    from transformers import set_seed

    device = prepared.device
    set_seed(cfg.train.seed)
    model = load_classifier(prepared.folder, None, pick_dtype(cfg.model.dtype, device), device,
                            cfg.model.trust_remote_code, cfg.model.attn_implementation,
                            prepared.tokenizer.pad_token_id)
    log(f"model: {prepared.source.label} ({type(model).__name__}, new head of 1 output, MSE loss) on {device}")
    return with_method(cfg, model, weights_footprint(model), autocast_dtype(cfg.train.precision, device))


def score_base(cfg: Config, prepared: Prepared, built: Built) -> dict | None:
    """The pretrained body with its untrained head on the test split."""
    if not (cfg.eval.compare_base and prepared.encoded["test"]):
        return None
    with base_model_context(built.model) as base_model:
        return score_regression(base_model, prepared.tokenizer, prepared.encoded["test"],
                                cfg.eval.generation.batch_size, built.amp, "base")


def train(cfg: Config, prepared: Prepared, built: Built, out_dir: Path, resume: bool) -> Fitted:
    """`fit` on transformers' Trainer with padded batches of float targets (its MSE loss for one output)."""
    from transformers import Trainer

    encoded = prepared.encoded
    has_val = bool(encoded["val"])
    args = build_training_args(cfg, out_dir, prepared.device, built.amp, has_val, len(encoded["train"]))
    trainer = Trainer(model=built.model, args=args, train_dataset=to_hf_dataset_labelled(encoded["train"]),
                      eval_dataset=to_hf_dataset_labelled(encoded["val"]) if has_val else None,
                      data_collator=LabelledCollator(prepared.tokenizer, scores=True))
    return fit(trainer, cfg, out_dir, prepared.device, resume)


def score_tuned(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted) -> dict | None:
    """The trained head on the test split."""
    if not prepared.encoded["test"]:
        return None
    return score_regression(fitted.model, prepared.tokenizer, prepared.encoded["test"],
                            cfg.eval.generation.batch_size, built.amp, "tuned")


def save(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, tuned) -> TrainResult:
    """Weights, metrics, the predicted-vs-true plot and per-row predictions, then the comparison and the report."""
    out_dir = Path(cfg.output.dir)
    saved = save_trained(fitted.model, prepared.tokenizer, str(out_dir), cfg.method)
    metrics = {
        "task": "regress",
        "method": cfg.method.name,
        "params": built.params(),
        "base_weights": built.footprint,
        "train": {**fitted.train_metrics(precision_name(built.amp)),
                  "tokens_per_s": round(fitted.per_second(prepared.splits.report["train_tokens"]), 1)},
        **fitted.common_metrics(prepared.device, prepared.estimate),
        "test": {"rows": len(prepared.encoded["test"]), "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
    }
    if tuned:
        golds = [e["labels"] for e in prepared.encoded["test"]]
        series = {"base": base["predictions"], "tuned": tuned["predictions"]} if base else {
            "tuned": tuned["predictions"]}
        plot_scores(golds, series, out_dir / "scores.png", "test split: predicted vs true score")
        rows = [{"where": ex.where, "text": ex.text, "label": float(ex.label),
                 **{name: round(values[i], 4) for name, values in series.items()}}
                for i, ex in enumerate(prepared.splits.test)]
        write_jsonl(out_dir / "predictions.jsonl", rows)
    conclude(cfg, out_dir, fitted.trainer, metrics, saved, base, tuned, len(prepared.encoded["test"]))
    return TrainResult(metrics, fitted.model, prepared.tokenizer, out_dir)
