"""The stages every training workflow spells, in this order and with these names (as litgpt's finetune scripts and
torchtune's recipes do):

    prepare -> load -> score_base -> fit -> score_tuned -> save

- `prepare`: every input read and checked (config, rows, model files, template, memory), nothing loaded but the
  tokenizer, nothing written;
- `load`: the weights, and the method applied to them;
- `score_base`: the model before training, on the held-out rows, inside the new run folder (`runs.run_folder`);
- `fit`: `training.fit.fit`, the one training loop with every guard;
- `score_tuned`: the trained model on the same rows, with the same settings;
- `save`: weights, metrics and the report (`runs.finish`).

This module holds what the stages hand to each other, so that `diff workflows/sft.py workflows/classify.py` shows
only what differs between the two tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from weitiao.console import log


@dataclass
class Prepared:
    """What `prepare` hands on: the checked data, encoded, and what reads it."""

    device: str
    splits: object  # data.dataset.Splits: the rows of each split, and the data report
    skipped: list | None  # bad rows skipped (data.skip_bad_rows), or None when the option is off
    source: object  # models.loading.ModelSource
    folder: str  # the model's local folder
    tokenizer: object
    template: object | None  # data.templates.ChatTemplate (None for a classifier)
    encoded: dict  # split name -> encoded rows (examples, pairs or labelled rows)
    estimate: dict | None  # the memory estimate (memory.guard.check), None where none could be made
    extra: dict = field(default_factory=dict)  # what one workflow's own stages need (e.g. DPO's starting point)


@dataclass
class Built:
    """What `load` hands on: the model with its method applied, and the numbers metrics.json reports of it."""

    model: object
    amp: object  # the autocast dtype, or None for fp32
    footprint: dict  # methods.weights_footprint of the base weights
    trainable: int
    total: int
    extra: dict = field(default_factory=dict)  # what the workflow's own `load` measured (e.g. sharding)

    def params(self) -> dict:
        return {"trainable": self.trainable, "total": self.total}


def with_method(cfg, model, footprint: dict, amp) -> Built:
    """`model` with the configured method applied (methods.apply_method), and its trainable-parameter count
    logged."""
    from weitiao.methods import apply_method, count_parameters

    model = apply_method(model, cfg.method, cfg.train.gradient_checkpointing)
    trainable, total = count_parameters(model)
    log(f"method: {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%)")
    return Built(model, amp, footprint, trainable, total)


def load_start(cfg, prepared: Prepared) -> Built:
    """A policy run's model (dpo, kto, orpo, simpo, grpo): the starting weights, then the starting run's LoRA
    adapter trained further, or the method applied. `extra` keeps the dtype and load arguments, for a second copy
    (DPO's reference)."""
    import time

    from transformers import set_seed

    from weitiao.methods import continue_adapter, count_parameters, load_kwargs, weights_footprint
    from weitiao.models.loading import load_model, pick_dtype
    from weitiao.models.precision import autocast_dtype, precision_warning

    device, start = prepared.device, prepared.extra["start"]
    amp = autocast_dtype(cfg.train.precision, device)
    if precision_warning(cfg.train.precision, device):
        log(precision_warning(cfg.train.precision, device))
    t0 = time.time()
    dtype, extra = pick_dtype(cfg.model.dtype, device), load_kwargs(cfg.method, device)
    model = load_model(start.folder, dtype, device, cfg.model.trust_remote_code, cfg.model.attn_implementation, extra)
    log(f"model: {start.source.label}" + (f" + adapter {start.adapter}" if start.adapter else "") +
        f" on {device}, loaded in {time.time() - t0:.1f}s")
    set_seed(cfg.train.seed)
    footprint = weights_footprint(model)
    if start.adapter:
        model = continue_adapter(model, start.adapter, cfg.method, cfg.train.gradient_checkpointing)
        log("method: the starting run's LoRA adapter is trained further (its own rank and targets)")
        built = Built(model, amp, footprint, *count_parameters(model))
    else:
        built = with_method(cfg, model, footprint, amp)
    built.extra.update(dtype=dtype, load_kwargs=extra)
    return built


def log_data(prepared_report: dict, skipped: list | None, template, what: str, count: int) -> None:
    """The lines every chat workflow prints once its rows are encoded."""
    if skipped:
        log(f"skipping {len(skipped)} bad row(s) (data.skip_bad_rows); they are listed in skipped_rows.jsonl")
    log(f"template: {template.name} (end of turn {template.eot!r}); train {what} {count}, truncated "
        f"{prepared_report['train_truncated']}, dropped as over-long {prepared_report['train_overlong_dropped']}")


def conclude(cfg, out_dir, trainer, metrics: dict, saved: str, base: dict | None, tuned: dict | None,
             rows: int, base_label: str = "base", tables: tuple[str, ...] = ()) -> None:
    """How a workflow that scores the test split ends (classify, regress, dpo): the run marked finished, any
    `tables` of its own, the base-vs-tuned table (the base column named `base_label`: dpo's is its starting
    model), where the weights went, and the report."""
    from pathlib import Path

    from weitiao.console import comparison_table
    from weitiao.evaluation.compare import write_report
    from weitiao.runs import finish

    finish(out_dir, trainer, metrics, saved)
    log("")
    for table in tables:
        log(table)
    if tuned:
        columns = {base_label: base["metrics"], "tuned": tuned["metrics"]} if base else {"tuned": tuned["metrics"]}
        log(comparison_table(f"test split ({rows} rows)", columns))
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {Path(out_dir) / 'metrics.json'}")
    if tuned and base and cfg.eval.report:
        write_report(out_dir)
