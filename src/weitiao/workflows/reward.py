"""A reward model: prepare -> load -> score_base -> fit -> score_tuned -> save (see weitiao.stages).

The model is the chat model with a sequence-classification head of one output; TRL's RewardTrainer trains it with
the Bradley-Terry loss -log sigmoid(r(x, y_chosen) - r(x, y_rejected)) (Ouyang et al. 2022, arXiv:2203.02155). The
pairs are tokenized with the model's chat template exactly as SFT and DPO tokenize them, so the model scores
conversations as a served model writes them. What is particular here: the held-out pairs are scored by pairwise
accuracy, before (an untrained head: a coin toss) and after.
"""
from __future__ import annotations

import json
from pathlib import Path

from weitiao.config import Config
from weitiao.console import comparison_table, log
from weitiao.data.dataset import encode_pair_split
from weitiao.data.splits import read_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation.reward import pairwise
from weitiao.evaluation.scoring import base_model_context
from weitiao.memory import guard as memory_guard
from weitiao.methods import save_trained, weights_footprint
from weitiao.models.loading import load_classifier, pick_device, pick_dtype
from weitiao.models.precision import autocast_dtype, precision_name, precision_warning
from weitiao.models.resolve import find_model
from weitiao.runs import TrainResult, decide_mode, finish, run_folder
from weitiao.stages import Built, Prepared, log_data, with_method
from weitiao.training.arguments import build_training_args
from weitiao.training.fit import Fitted, fit

REWARD_LABELS = ["reward"]  # the head's single output


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    device = pick_device(cfg.model.device)
    mode = decide_mode(cfg, overwrite, resume)
    prepared = prepare(cfg, device)
    built = load(cfg, prepared)
    with run_folder(cfg, mode, prepared.template, prepared.splits.report, prepared.skipped) as out_dir:
        base = score_base(cfg, prepared, built)
    fitted = train(cfg, prepared, built, out_dir, mode == "resume")
    tuned = score_tuned(cfg, prepared, built, fitted)
    return save(cfg, prepared, built, fitted, base, tuned)


def prepare(cfg: Config, device: str) -> Prepared:
    """Every pair read and checked, token ids made with the chat template, and the memory estimated: chosen and
    rejected go through the model together (2 x batch_size rows)."""
    splits, skipped = read_splits(cfg, "pairs")
    source, folder, tokenizer, template = find_model(cfg)
    splits.report["model_source"] = source.describe()
    pairs = {name: encode_pair_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                     skipped=skipped)
             for name in ("train", "val", "test")}
    log_data(splits.report, skipped, template, "pairs", len(pairs["train"]))
    if not pairs["train"]:
        raise WeitiaoError("data: every training pair was dropped as over-long; raise data.max_length")
    longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
                  for p in pairs["train"] + pairs["val"])
    estimate = memory_guard.check(cfg, folder, device, longest, log)
    return Prepared(device, splits, skipped, source, folder, tokenizer, template, pairs, estimate)


def load(cfg: Config, prepared: Prepared) -> Built:
    """The chat model with a new head of one output (seeded: the same head in every run), then the method."""
    from transformers import set_seed

    device = prepared.device
    amp = autocast_dtype(cfg.train.precision, device)
    if precision_warning(cfg.train.precision, device):
        log(precision_warning(cfg.train.precision, device))
    set_seed(cfg.train.seed)
    model = load_classifier(prepared.folder, REWARD_LABELS, pick_dtype(cfg.model.dtype, device), device,
                            cfg.model.trust_remote_code, cfg.model.attn_implementation,
                            prepared.tokenizer.pad_token_id)
    log(f"model: {prepared.source.label} ({type(model).__name__}, new head of 1 output) on {device}")
    return with_method(cfg, model, weights_footprint(model), amp)


def held_out(prepared: Prepared) -> str:
    """The split the pairwise accuracy is measured on: test, or val when there is no test split."""
    return "test" if prepared.encoded["test"] else "val"


def score_base(cfg: Config, prepared: Prepared, built: Built) -> dict | None:
    """The untrained head on the held-out pairs."""
    name = held_out(prepared)
    if not (cfg.eval.compare_base and prepared.encoded[name]):
        return None
    with base_model_context(built.model) as base_model:
        base = pairwise(base_model, prepared.encoded[name], prepared.tokenizer.pad_token_id,
                        cfg.eval.generation.batch_size, built.amp)
    log(f"[base] pairwise accuracy {base['accuracy']:.4f} on {len(prepared.encoded[name])} {name} pairs")
    return base


def train(cfg: Config, prepared: Prepared, built: Built, out_dir: Path, resume: bool) -> Fitted:
    """`fit` on TRL's RewardTrainer, given weitiao's tokenized pairs."""
    from trl import RewardConfig, RewardTrainer

    from weitiao.training.preference import pair_dataset

    pairs, has_val = prepared.encoded, bool(prepared.encoded["val"])
    args = build_training_args(
        cfg, out_dir, prepared.device, built.amp, has_val, len(pairs["train"]), args_class=RewardConfig,
        max_length=None,  # pairs are already cut to data.max_length
        center_rewards_coefficient=cfg.preference.center_rewards or None,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
    )
    trainer = RewardTrainer(
        model=built.model, args=args, processing_class=prepared.tokenizer,
        train_dataset=pair_dataset(pairs["train"], with_prompt=False),
        eval_dataset=pair_dataset(pairs["val"], with_prompt=False) if has_val else None)
    return fit(trainer, cfg, out_dir, prepared.device, resume)


def score_tuned(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted) -> dict | None:
    """The trained reward model on the held-out pairs."""
    name = held_out(prepared)
    if not prepared.encoded[name]:
        return None
    tuned = pairwise(fitted.model, prepared.encoded[name], prepared.tokenizer.pad_token_id,
                     cfg.eval.generation.batch_size, built.amp)
    log(f"[tuned] pairwise accuracy {tuned['accuracy']:.4f} on {len(prepared.encoded[name])} {name} pairs")
    return tuned


def save(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, tuned) -> TrainResult:
    """Weights (the adapter with its trained head, or the whole model), metrics and each pair's scores."""
    out_dir, name = Path(cfg.output.dir), held_out(prepared)
    saved = save_trained(fitted.model, prepared.tokenizer, str(out_dir), cfg.method)
    strip = lambda scores: {k: v for k, v in scores.items() if k != "per_pair"} if scores else None  # noqa: E731
    common = fitted.common_metrics(prepared.device, prepared.estimate, accuracy="eval_accuracy")
    metrics = {
        "task": "reward",
        "method": cfg.method.name,
        "params": built.params(),
        "base_weights": built.footprint,
        "train": {**fitted.train_metrics(precision_name(built.amp)),
                  "pairs_per_s": fitted.per_second(len(prepared.encoded["train"]))},
        **common,
        "test": {"split": name, "pairs": len(prepared.encoded[name]), "base": strip(base), "tuned": strip(tuned)},
        "data": {"train_pairs": len(prepared.encoded["train"])},
    }
    if tuned:
        rows = [{"where": ex.where, "prompt": ex.messages[-2][1], "chosen": ex.messages[-1][1],
                 "rejected": ex.rejected, "tuned": tuned["per_pair"][i],
                 **({"base": base["per_pair"][i]} if base else {})}
                for i, ex in enumerate(getattr(prepared.splits, name))]
        (out_dir / "predictions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    finish(out_dir, fitted.trainer, metrics, saved)
    log("")
    if tuned:
        columns = {"base": strip(base), "tuned": strip(tuned)} if base else {"tuned": strip(tuned)}
        log(comparison_table(f"held-out {name} pairs ({len(prepared.encoded[name])})", columns))
    log(f"\nsaved {Path(saved).name} to {saved}; metrics in {out_dir / 'metrics.json'}")
    return TrainResult(metrics, fitted.model, prepared.tokenizer, out_dir)
