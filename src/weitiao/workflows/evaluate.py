"""Evaluate any model, or a model plus adapter, on a split: config -> data -> model -> [adapter] -> score -> report.

The target is a config file (the base model of `model.name_or_path`, or `--adapter` / `--model-dir` on top), or a
finished run folder (its resolved config and its saved adapter or model). Decoding settings come from `eval`, so
the numbers are comparable with those `weitiao train` printed.
"""
from __future__ import annotations

from pathlib import Path

from weitiao.config import Config
from weitiao.console import comparison_table, log
from weitiao.data.dataset import encode_split, load_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation.rephrase import (
    check_source,
    refuse_the_augmenters_rephraser,
    seen_texts,
)
from weitiao.evaluation.rephraser import rephrasings_for
from weitiao.evaluation.scoring import gap_lines, score_rephrased, score_split
from weitiao.methods import load_kwargs
from weitiao.models.loading import load_model, pick_device, pick_dtype
from weitiao.models.precision import autocast_dtype
from weitiao.models.resolve import attach_adapter, find_model, find_tokenizer
from weitiao.runs import write_json


def run(cfg: Config, adapter: str | None = None, model_dir: str | None = None, split: str = "test",
        out: str | None = None, rephrase: bool = False) -> dict:
    # ---- data
    splits = load_splits(cfg.data, cfg.base_dir)
    examples = getattr(splits, split)
    if not examples:
        raise WeitiaoError(f"--split {split}: the config defines no {split} rows "
                           f"(set data.{split} or data.{split}_ratio)")
    if rephrase:
        check_source(cfg)
        refuse_the_augmenters_rephraser(cfg, splits.report.get("train_files", []))
    if cfg.task in ("classify", "regress"):
        if rephrase:
            raise WeitiaoError(f"--rephrase: rephrased questions are for chat tasks (sft, dpo, kto), not {cfg.task}")
        return run_head(cfg, splits, examples, adapter, model_dir, split, out)

    # ---- model: base, a full model folder, or base + adapter
    source, folder, tokenizer, template = find_model(cfg, model_dir)
    encoded = encode_split(examples, template, tokenizer, cfg.data, split, splits.report)
    device = pick_device(cfg.model.device)
    model = load_model(folder, pick_dtype(cfg.model.dtype, device), device, cfg.model.trust_remote_code,
                       cfg.model.attn_implementation, load_kwargs(cfg.method, device))
    # ---- rephrasings of the questions (--rephrase), written by rules or a model before any adapter is attached,
    # so `rephrase.model: base` is the base model
    rephrasings = None
    if rephrase:
        n = cfg.eval.max_samples or len(examples)
        rephrasings = rephrasings_for(cfg, examples[:n], log, base=None if model_dir else (model, tokenizer, template),
                                      seen=seen_texts(splits.train, cfg.rephrase.target))
    model, label = attach_adapter(model, adapter)

    # ---- score
    amp = autocast_dtype(cfg.train.precision, device)
    scores = score_split(model, tokenizer, template, examples, encoded, cfg, amp, label)
    result = {"model": source.label, "adapter": adapter, "split": split, "rows": scores.rows,
              "metrics": scores.metrics, "predictions": scores.predictions, "per_row": scores.per_row}
    columns = {label: scores.metrics}
    if rephrasings is not None:
        result["rephrased"] = score_rephrased(cfg, model, tokenizer, template, examples[:scores.rows], rephrasings,
                                              amp, label, scores.per_row)
        columns = {"original": scores.metrics, "rephrased": result["rephrased"]["metrics"]}
    log("")
    log(comparison_table(f"{split} split ({scores.rows} rows)", columns))
    if rephrasings is not None:
        log(gap_lines(result["rephrased"]))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
        log(f"wrote {out}")
    return result


def run_head(cfg: Config, splits, examples, adapter, model_dir, split: str, out) -> dict:
    """The counterpart for a head (base + new head, an adapter, or a saved model folder) on a split: a classifier,
    with the classes in the order the config (a run's resolved config) lists them, or a regression head."""
    from weitiao.data.dataset import encode_labelled, label_names, score_labels
    from weitiao.evaluation.classification import score_classes
    from weitiao.evaluation.regression import score_regression
    from weitiao.models.loading import load_classifier

    labels = label_names(cfg.data, splits) if cfg.task == "classify" else score_labels(splits)
    source, folder, tokenizer = find_tokenizer(cfg, model_dir)
    encoded = encode_labelled(examples, tokenizer, labels, cfg.data.max_length, split, splits.report)
    device = pick_device(cfg.model.device)
    model = load_classifier(folder, labels, pick_dtype(cfg.model.dtype, device), device, cfg.model.trust_remote_code,
                            cfg.model.attn_implementation, tokenizer.pad_token_id)
    model, label = attach_adapter(model, adapter)
    amp = autocast_dtype(cfg.train.precision, device)
    batch = cfg.eval.generation.batch_size
    result = {"model": source.label, "adapter": adapter, "split": split, "rows": len(encoded)}
    if labels:
        scores = score_classes(model, tokenizer, encoded, labels, batch, amp, label)
        result.update(labels=labels, confusion=scores["confusion"], per_class=scores["per_class"],
                      predictions=[labels[p] for p in scores["predictions"]])
    else:
        scores = score_regression(model, tokenizer, encoded, batch, amp, label)
        result.update(predictions=[round(p, 4) for p in scores["predictions"]])
    result["metrics"] = scores["metrics"]
    log("")
    log(comparison_table(f"{split} split ({len(encoded)} rows)", {label: scores["metrics"]}))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
        log(f"wrote {out}")
    return result


