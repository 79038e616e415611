"""Preference optimisation against a reference (DPO, KTO), top to bottom: config -> pairs -> start model -> method
-> start eval -> train -> held-out pairs -> eval -> save.

DPO (Rafailov et al. 2023, arXiv:2305.18290) trains the policy pi on pairs (x, y_w, y_l) to raise
beta * (log pi(y_w|x) - log ref(y_w|x)) above the same for y_l, where ref is the frozen starting model. KTO
(Ethayarajh et al. 2024, arXiv:2402.01306) takes each answer alone, desirable or not, and pushes its log-ratio
above or below a KL estimate; `task: kto` feeds it the same pairs taken apart. Training is TRL's DPOTrainer or
KTOTrainer; weitiao gives them pairs tokenized like SFT (`data.encode.encode_pair`). The reference costs no
second model when an adapter is trained: TRL keeps a frozen copy of the starting adapter as a second, "ref",
adapter (for a fresh LoRA that copy is zero, i.e. the base model), a few MB. `full` and `freeze` load a second
copy of the starting weights.

The run folder has the SFT run's layout (adapter/ or model/, config, template, metrics), so `weitiao eval`,
`chat`, `serve` and `export` take it as they take an SFT run, and a later DPO or KTO run can start from it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from weitiao.config import Config
from weitiao.data.dataset import encode_pair_split, encode_split
from weitiao.errors import Interrupted, WeitiaoError
from weitiao.evaluation.preference import implicit_rewards
from weitiao.memory import guard as memory_guard
from weitiao.methods import (
    ADAPTER_METHODS, apply_method, continue_adapter, count_parameters, load_kwargs, weights_footprint,
)
from weitiao.models.loading import load_model, pick_device, pick_dtype
from weitiao.training.checkpoints import last_complete
from weitiao.workflows.common import (
    RUN_FILE, autocast_dtype, check_output_dir, comparison_table, find_start, log, plot_losses, precision_warning,
    prediction_rows, read_splits, remove_dir, score_split, write_json, write_predictions, write_report,
    write_run_files,
)
from weitiao.workflows.sft import (TrainResult, build_training_args, check_same_config, peak_memory, precision_name,
                                   training_peak)

def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    out_dir = Path(cfg.output.dir)
    mode = check_output_dir(out_dir, overwrite or cfg.output.overwrite, resume)
    if mode == "resume":
        check_same_config(cfg, out_dir)
        log(f"resuming the unfinished run in {out_dir} (--overwrite starts over)")

    # ---- data: every pair read and checked before the model is loaded
    splits, skipped = read_splits(cfg, "pairs")

    # ---- the starting point (a model, or a finished run's model or adapter and template), then token ids
    start = find_start(cfg)
    tokenizer, template = start.tokenizer, start.template
    pairs = {name: encode_pair_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                     skipped=skipped)
             for name in ("train", "val", "test")}
    # the test rows also as conversations ending with the chosen answer: the task metric before and after
    test_encoded = encode_split(splits.test, template, tokenizer, cfg.data, "test_sft", {}, skipped=skipped)
    if skipped:
        log(f"skipping {len(skipped)} bad row(s) (data.skip_bad_rows); they are listed in skipped_rows.jsonl")
    log(f"template: {template.name}; train pairs {len(pairs['train'])}, truncated "
        f"{splits.report['train_truncated']}, dropped as over-long {splits.report['train_overlong_dropped']}")
    if not pairs["train"]:
        raise WeitiaoError("data: every training pair was dropped as over-long; raise data.max_length")

    # ---- memory: chosen and rejected (KTO: each row and its KL row) go through the model together
    device = pick_device(cfg.model.device)
    longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
                  for p in pairs["train"] + pairs["val"])
    estimate = memory_guard.check(cfg, start.folder, device, longest, log)

    # ---- model and method (TRL is imported only now, after every input check)
    from transformers import set_seed
    from trl import DPOConfig, KTOConfig

    from weitiao.training.callbacks import NonFiniteGuard, SaveOnInterrupt
    from weitiao.training.preference import TokenizedDPOTrainer, TokenizedKTOTrainer, pair_dataset, unpaired_dataset

    amp = autocast_dtype(cfg.train.precision, device)
    if precision_warning(cfg.train.precision, device):
        log(precision_warning(cfg.train.precision, device))
    t0 = time.time()
    dtype = pick_dtype(cfg.model.dtype, device)
    extra = load_kwargs(cfg.method, device)
    model = load_model(start.folder, dtype, device, cfg.model.trust_remote_code, cfg.model.attn_implementation, extra)
    log(f"model: {start.source.label}" + (f" + adapter {start.adapter}" if start.adapter else "") +
        f" on {device}, loaded in {time.time() - t0:.1f}s")
    set_seed(cfg.train.seed)
    footprint = weights_footprint(model)
    if start.adapter:
        model = continue_adapter(model, start.adapter, cfg.method, cfg.train.gradient_checkpointing)
        log("method: the starting run's LoRA adapter is trained further (its own rank and targets); a frozen copy "
            "of it is the reference")
    else:
        model = apply_method(model, cfg.method, cfg.train.gradient_checkpointing)
    ref_model = None
    if cfg.method.name not in ADAPTER_METHODS:  # full / freeze: the reference is a second, frozen copy
        ref_model = load_model(start.folder, dtype, device, cfg.model.trust_remote_code,
                               cfg.model.attn_implementation, extra).eval().requires_grad_(False)
    trainable, total = count_parameters(model)
    pref = cfg.preference
    losses = list(pref.loss_type) or (["kto"] if cfg.task == "kto" else ["sigmoid"])
    log(f"method: {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%); {cfg.task} with beta {pref.beta}, loss {'+'.join(losses)}")

    # ---- the output folder: created only now that every input has been checked
    fresh = mode == "fresh"
    if fresh:
        remove_dir(out_dir)
        out_dir.mkdir(parents=True)
    try:
        write_run_files(out_dir, cfg, template, splits.report, skipped)

        # ---- the starting model on the test split (its chosen answers as references; kept across a resume)
        before = None
        before_file = out_dir / "eval_base.json"
        if cfg.eval.compare_base and splits.test:
            if before_file.is_file():
                before = json.loads(before_file.read_text())
            else:
                before = score_split(model, tokenizer, template, splits.test, test_encoded, cfg, amp,
                                     "start").as_dict()
                write_json(before_file, before)
    except WeitiaoError:
        if fresh:
            remove_dir(out_dir)
        raise

    # ---- train (from the newest complete checkpoint when resuming)
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, log)
    interrupt = SaveOnInterrupt(log)
    has_val = bool(pairs["val"])
    if cfg.task == "kto":  # rows: (prompt, chosen, desirable) and (prompt, rejected, undesirable), in a seeded order
        trainer_class, rows = TokenizedKTOTrainer, lambda split: unpaired_dataset(split, cfg.train.seed)
        specific = dict(args_class=KTOConfig, loss_type=losses[0], desirable_weight=pref.desirable_weight,
                        undesirable_weight=pref.undesirable_weight,
                        train_sampling_strategy="sequential")  # the KL rows were built batch by batch, in order
    else:
        trainer_class, rows = TokenizedDPOTrainer, pair_dataset
        specific = dict(args_class=DPOConfig, loss_type=losses, loss_weights=list(pref.loss_weights) or None,
                        label_smoothing=pref.label_smoothing)
    train_rows = rows(pairs["train"])
    args = build_training_args(
        cfg, out_dir, device, amp, has_val, len(train_rows), beta=pref.beta,
        max_length=None,  # pairs are already cut to data.max_length, prompt first
        gradient_checkpointing=cfg.train.gradient_checkpointing, **specific)
    callbacks = [guard, interrupt]
    if cfg.train.early_stopping_patience and has_val:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer = trainer_class(
        model=model, ref_model=ref_model, args=args, processing_class=tokenizer, callbacks=callbacks,
        train_dataset=train_rows, eval_dataset=rows(pairs["val"]) if has_val else None)
    begin = last_complete(out_dir / "checkpoints", log) if mode == "resume" else None
    if mode == "resume":
        log(f"resuming from {begin}" if begin else "no complete checkpoint yet: training from the start")
    t0 = time.time()
    with training_peak(device) as train_peak:
        result = trainer.train(resume_from_checkpoint=str(begin) if begin else None)
    train_seconds = time.time() - t0
    if guard.stopped_at is not None:
        write_json(out_dir / RUN_FILE, {"status": "failed", "reason": "non-finite gradients"})
        raise WeitiaoError(f"training stopped at step {guard.stopped_at}: {guard.consecutive} non-finite gradients "
                           f"in a row. The last good checkpoint is {last_complete(out_dir / 'checkpoints', log)}. "
                           "Lower train.learning_rate or raise preference.beta.")
    if interrupt.requested:
        write_json(out_dir / RUN_FILE, {"status": "interrupted", "step": trainer.state.global_step})
        raise Interrupted(f"interrupted at step {trainer.state.global_step}: checkpoint saved in "
                          f"{last_complete(out_dir / 'checkpoints', log)}; run the same command again to resume")
    trainer.save_state()

    # ---- held-out pairs: does the tuned policy prefer the chosen answers, by its implicit reward
    # beta * log(pi / ref)? Computed by weitiao the same way for DPO and KTO (TRL logs it for DPO only)
    held_name = "test" if pairs["test"] else "val"
    held_out = None
    if pairs[held_name]:
        held_out = {"split": held_name, **implicit_rewards(trainer.model, pairs[held_name], pref.beta,
                                                           tokenizer.pad_token_id, ref_model, cfg.train.batch_size,
                                                           amp)}
        log(f"held-out {held_name} pairs ({len(pairs[held_name])}): reward accuracy "
            f"{held_out['reward_accuracy']:.4f}, margin {held_out['reward_margin']:.4f}")

    # ---- the tuned policy on the test split
    after = None
    if splits.test:
        after = score_split(trainer.model, tokenizer, template, splits.test, test_encoded, cfg, amp,
                            "tuned").as_dict()

    # ---- save: the trained weights only (not TRL's "ref" adapter), state, metrics, curve, predictions
    saved = save_policy(trainer.model, tokenizer, out_dir, cfg)
    history = trainer.state.log_history
    (out_dir / "trainer_state.json").write_text(
        (Path(trainer.args.output_dir) / "trainer_state.json").read_text(encoding="utf-8"), encoding="utf-8")
    plot_losses(history, out_dir / "loss_curve.png")
    metrics = {
        "task": cfg.task,
        "method": cfg.method.name,
        "start": {"model": start.source.label, "run": str(start.run_dir) if start.run_dir else None,
                  "adapter": start.adapter},
        "params": {"trainable": trainable, "total": total},
        "base_weights": footprint,
        "train": {
            "precision": precision_name(amp),
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0, 4),
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            "train_loss_mean": round(result.training_loss, 6),
            "runtime_s": round(train_seconds, 1),
            "pairs_per_s": round(len(pairs["train"]) * (trainer.state.epoch or 0) / train_seconds, 3),
            "loss": losses,
            "nonfinite_steps_skipped": guard.skipped,
        },
        "memory": {**peak_memory(device, train_peak), "estimate": estimate},
        "val": [{"step": h["step"], "loss": h["eval_loss"],
                 "reward_accuracy": h.get("eval_rewards/accuracies"), "reward_margin": h.get("eval_rewards/margins")}
                for h in history if "eval_loss" in h],
        "best": {"checkpoint": trainer.state.best_model_checkpoint, "val_loss": trainer.state.best_metric},
        "preference": held_out,
        # "base" is the starting model (e.g. the SFT run), scored with the chosen answers as references
        "test": {"rows": after["rows"] if after else 0, "base": before["metrics"] if before else None,
                 "tuned": after["metrics"] if after else None},
        "data": {"train_pairs": len(pairs["train"])},
    }
    if after:
        write_predictions(out_dir / "predictions.jsonl",
                          prediction_rows(splits.test, after, before, rejected=lambda ex: ex.rejected))
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / RUN_FILE, {"status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "saved": Path(saved).name})

    log("")
    if held_out:
        log(comparison_table(f"held-out {held_name} pairs ({held_out['pairs']})",
                             {"tuned": {k: v for k, v in held_out.items() if k not in ("split", "pairs")}}))
    if after:
        columns = {"start": before["metrics"], "tuned": after["metrics"]} if before else {"tuned": after["metrics"]}
        log(comparison_table(f"test split ({after['rows']} rows)", columns))
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    if after and before and cfg.eval.report:
        write_report(out_dir)
    return TrainResult(metrics, trainer.model, tokenizer, out_dir)


def save_policy(model, tokenizer, out_dir: Path, cfg: Config) -> str:
    """The trained policy as an SFT run saves it: adapter/ (the "default" adapter alone) or model/."""
    if cfg.method.name in ADAPTER_METHODS:
        folder = out_dir / "adapter"
        model.save_pretrained(str(folder), selected_adapters=["default"])
    else:
        folder = out_dir / "model"
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    return str(folder)

