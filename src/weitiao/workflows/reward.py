"""A reward model, top to bottom: config -> pairs -> model with a one-output head -> method -> base eval -> train
-> eval -> save.

The model is the chat model with a sequence-classification head of one output; TRL's RewardTrainer trains it with
the Bradley-Terry loss -log sigmoid(r(x, y_chosen) - r(x, y_rejected)) (Ouyang et al. 2022, arXiv:2203.02155). The
pairs are tokenized with the model's chat template exactly as SFT and DPO tokenize them, so the model scores
conversations as a served model writes them. The test is pairwise accuracy on held-out pairs, before (an untrained
head: a coin toss) and after.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from weitiao.config import Config
from weitiao.data.dataset import encode_pair_split
from weitiao.errors import Interrupted, WeitiaoError
from weitiao.evaluation.reward import pairwise
from weitiao.memory import guard as memory_guard
from weitiao.methods import apply_method, count_parameters, save_trained, weights_footprint
from weitiao.models.loading import load_classifier, pick_device, pick_dtype
from weitiao.training.checkpoints import last_complete
from weitiao.workflows.common import (
    RUN_FILE, autocast_dtype, base_model_context, check_output_dir, comparison_table, find_model, log, plot_losses,
    precision_warning, read_splits, remove_dir, write_json, write_run_files,
)
from weitiao.workflows.sft import (TrainResult, build_training_args, check_same_config, peak_memory, precision_name,
                                   training_peak)

REWARD_LABELS = ["reward"]  # the head's single output


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    out_dir = Path(cfg.output.dir)
    mode = check_output_dir(out_dir, overwrite or cfg.output.overwrite, resume)
    if mode == "resume":
        check_same_config(cfg, out_dir)
        log(f"resuming the unfinished run in {out_dir} (--overwrite starts over)")

    # ---- data: every pair read and checked before the model is loaded
    splits, skipped = read_splits(cfg, "pairs")

    # ---- tokenizer and template, then token ids of each pair
    source, folder, tokenizer, template = find_model(cfg)
    pairs = {name: encode_pair_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                     skipped=skipped)
             for name in ("train", "val", "test")}
    if skipped:
        log(f"skipping {len(skipped)} bad row(s) (data.skip_bad_rows); they are listed in skipped_rows.jsonl")
    log(f"template: {template.name}; train pairs {len(pairs['train'])}, truncated "
        f"{splits.report['train_truncated']}, dropped as over-long {splits.report['train_overlong_dropped']}")
    if not pairs["train"]:
        raise WeitiaoError("data: every training pair was dropped as over-long; raise data.max_length")

    # ---- memory: chosen and rejected go through the model together (2 x batch_size rows)
    device = pick_device(cfg.model.device)
    longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
                  for p in pairs["train"] + pairs["val"])
    estimate = memory_guard.check(cfg, folder, device, longest, log)

    # ---- model with a one-output head, and method (TRL is imported only now, after every input check)
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from weitiao.training.callbacks import NonFiniteGuard, SaveOnInterrupt
    from weitiao.training.preference import pair_dataset

    amp = autocast_dtype(cfg.train.precision, device)
    if precision_warning(cfg.train.precision, device):
        log(precision_warning(cfg.train.precision, device))
    set_seed(cfg.train.seed)  # the new head's weights must be the same in every run
    model = load_classifier(folder, REWARD_LABELS, pick_dtype(cfg.model.dtype, device), device,
                            cfg.model.trust_remote_code, cfg.model.attn_implementation, tokenizer.pad_token_id)
    log(f"model: {source.label} ({type(model).__name__}, new head of 1 output) on {device}")
    footprint = weights_footprint(model)
    model = apply_method(model, cfg.method, cfg.train.gradient_checkpointing)
    trainable, total = count_parameters(model)
    log(f"method: {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%)")

    # ---- the output folder: created only now that every input has been checked
    fresh = mode == "fresh"
    if fresh:
        remove_dir(out_dir)
        out_dir.mkdir(parents=True)
    write_run_files(out_dir, cfg, template, splits.report, skipped)

    # ---- the untrained head on the held-out pairs
    held_name = "test" if pairs["test"] else "val"
    batch_size = cfg.eval.generation.batch_size
    base = None
    if cfg.eval.compare_base and pairs[held_name]:
        with base_model_context(model) as base_model:
            base = pairwise(base_model, pairs[held_name], tokenizer.pad_token_id, batch_size, amp)
        log(f"[base] pairwise accuracy {base['accuracy']:.4f} on {len(pairs[held_name])} {held_name} pairs")

    # ---- train (from the newest complete checkpoint when resuming)
    guard, interrupt = NonFiniteGuard(cfg.train.max_nonfinite_steps, log), SaveOnInterrupt(log)
    has_val = bool(pairs["val"])
    args = build_training_args(
        cfg, out_dir, device, amp, has_val, len(pairs["train"]), args_class=RewardConfig,
        max_length=None,  # pairs are already cut to data.max_length
        center_rewards_coefficient=cfg.preference.center_rewards or None,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
    )
    callbacks = [guard, interrupt]
    if cfg.train.early_stopping_patience and has_val:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer = RewardTrainer(
        model=model, args=args, processing_class=tokenizer, callbacks=callbacks,
        train_dataset=pair_dataset(pairs["train"], with_prompt=False),
        eval_dataset=pair_dataset(pairs["val"], with_prompt=False) if has_val else None)
    begin = last_complete(out_dir / "checkpoints", log) if mode == "resume" else None
    t0 = time.time()
    with training_peak(device) as train_peak:
        result = trainer.train(resume_from_checkpoint=str(begin) if begin else None)
    train_seconds = time.time() - t0
    if guard.stopped_at is not None:
        write_json(out_dir / RUN_FILE, {"status": "failed", "reason": "non-finite gradients"})
        raise WeitiaoError(f"training stopped at step {guard.stopped_at}: {guard.consecutive} non-finite gradients "
                           "in a row; lower train.learning_rate")
    if interrupt.requested:
        write_json(out_dir / RUN_FILE, {"status": "interrupted", "step": trainer.state.global_step})
        raise Interrupted(f"interrupted at step {trainer.state.global_step}; run the same command again to resume")
    trainer.save_state()

    # ---- the trained reward model on the held-out pairs
    tuned = None
    if pairs[held_name]:
        tuned = pairwise(trainer.model, pairs[held_name], tokenizer.pad_token_id, batch_size, amp)
        log(f"[tuned] pairwise accuracy {tuned['accuracy']:.4f} on {len(pairs[held_name])} {held_name} pairs")

    # ---- save: weights (the adapter with its trained head, or the whole model), metrics, curve, scores
    saved = save_trained(trainer.model, tokenizer, str(out_dir), cfg.method)
    history = trainer.state.log_history
    (out_dir / "trainer_state.json").write_text(
        (Path(trainer.args.output_dir) / "trainer_state.json").read_text(encoding="utf-8"), encoding="utf-8")
    plot_losses(history, out_dir / "loss_curve.png")
    strip = lambda scores: {k: v for k, v in scores.items() if k != "per_pair"} if scores else None  # noqa: E731
    metrics = {
        "task": "reward",
        "method": cfg.method.name,
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
            "nonfinite_steps_skipped": guard.skipped,
        },
        "memory": {**peak_memory(device, train_peak), "estimate": estimate},
        "val": [{"step": h["step"], "loss": h["eval_loss"], "accuracy": h.get("eval_accuracy")}
                for h in history if "eval_loss" in h],
        "best": {"checkpoint": trainer.state.best_model_checkpoint, "val_loss": trainer.state.best_metric},
        "test": {"split": held_name, "pairs": len(pairs[held_name]), "base": strip(base), "tuned": strip(tuned)},
        "data": {"train_pairs": len(pairs["train"])},
    }
    if tuned:
        examples = getattr(splits, held_name)
        rows = [{"where": ex.where, "prompt": ex.messages[-2][1], "chosen": ex.messages[-1][1],
                 "rejected": ex.rejected, "tuned": tuned["per_pair"][i],
                 **({"base": base["per_pair"][i]} if base else {})} for i, ex in enumerate(examples)]
        (out_dir / "predictions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / RUN_FILE, {"status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "saved": Path(saved).name})

    log("")
    if tuned:
        columns = {"base": strip(base), "tuned": strip(tuned)} if base else {"tuned": strip(tuned)}
        log(comparison_table(f"held-out {held_name} pairs ({len(pairs[held_name])})", columns))
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    return TrainResult(metrics, trainer.model, tokenizer, out_dir)
