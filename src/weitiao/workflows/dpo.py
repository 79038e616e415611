"""Preference optimisation on pairs (DPO, KTO against a reference; ORPO, SimPO without one): prepare -> load ->
score_base -> fit -> score_tuned -> save (see weitiao.stages).

DPO (Rafailov et al. 2023, arXiv:2305.18290) trains the policy pi on pairs (x, y_w, y_l) to raise
beta * (log pi(y_w|x) - log ref(y_w|x)) above the same for y_l, where ref is the frozen starting model. KTO
(Ethayarajh et al. 2024, arXiv:2402.01306) takes each answer alone, desirable or not, and pushes its log-ratio
above or below a KL estimate; `task: kto` feeds it the same pairs taken apart. Training is TRL's DPOTrainer or
KTOTrainer; weitiao gives them pairs tokenized like SFT (`data.encode.encode_pair`). The reference costs no
second model when an adapter is trained: TRL keeps a frozen copy of the starting adapter as a second, "ref",
adapter (for a fresh LoRA that copy is zero, i.e. the base model), a few MB. `full` and `freeze` load a second
copy of the starting weights. ORPO (Hong et al. 2024, arXiv:2403.07691) adds an odds-ratio term to the chosen
answer's NLL, and SimPO (Meng et al. 2024, arXiv:2405.14734) compares length-normalised log-probabilities against
a margin: neither has a reference, so neither keeps one (TRL's ORPOTrainer and CPOTrainer, given the same pairs).

What is particular here: the run starts from a model or a finished run (`find_start`); "base" is that starting
model, scored on the test prompts with the chosen answers as references; held-out pairs are scored by the implicit
reward. The run folder has the SFT run's layout (adapter/ or model/, config, template, metrics), so `weitiao
eval`, `chat`, `serve` and `export` take it as they take an SFT run, and a later DPO or KTO run can start from it.
"""
from __future__ import annotations

import json
from pathlib import Path

from weitiao.config import TASK_RULES, Config
from weitiao.console import comparison_table, log
from weitiao.data.dataset import encode_pair_split, encode_split
from weitiao.data.splits import read_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation.preference import implicit_rewards, length_normalised_rewards
from weitiao.evaluation.scoring import prediction_rows, score_split
from weitiao.memory import guard as memory_guard
from weitiao.methods import method_of
from weitiao.models.loading import load_model, pick_device
from weitiao.models.precision import precision_name
from weitiao.models.resolve import find_start
from weitiao.runs import TrainResult, decide_mode, run_folder, write_json, write_predictions
from weitiao.stages import Built, Prepared, conclude, load_start, log_data
from weitiao.training.arguments import build_training_args
from weitiao.training.fit import Fitted, fit


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    device = pick_device(cfg.model.device)
    mode = decide_mode(cfg, overwrite, resume)
    prepared = prepare(cfg, device)
    built = load(cfg, prepared)
    with run_folder(cfg, mode, prepared.template, prepared.splits.report, prepared.skipped) as out_dir:
        base = score_base(cfg, prepared, built, out_dir)
        built.extra["preference_start"] = held_out_start(cfg, prepared, built, out_dir)
    fitted = train(cfg, prepared, built, out_dir, mode == "resume")
    held_out, tuned = score_tuned(cfg, prepared, built, fitted)
    return save(cfg, prepared, built, fitted, base, held_out, tuned)


def prepare(cfg: Config, device: str) -> Prepared:
    """Every pair read and checked, the starting point found (a model, or a finished run's model or adapter and
    its template), token ids made, and the memory estimated: chosen and rejected (KTO: each row and its KL row)
    go through the model together."""
    splits, skipped = read_splits(cfg, "pairs")
    start = find_start(cfg)
    splits.report["model_source"] = start.source.describe()
    tokenizer, template = start.tokenizer, start.template
    pairs = {name: encode_pair_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                     skipped=skipped)
             for name in ("train", "val", "test")}
    # the test rows also as conversations ending with the chosen answer: the task metric before and after
    pairs["test_sft"] = encode_split(splits.test, template, tokenizer, cfg.data, "test_sft", {}, skipped=skipped)
    log_data(splits.report, skipped, template, "pairs", len(pairs["train"]))
    if not pairs["train"]:
        raise WeitiaoError("data: every training pair was dropped as over-long; raise data.max_length")
    longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
                  for p in pairs["train"] + pairs["val"])
    estimate = memory_guard.check(cfg, start.folder, device, longest, log)
    return Prepared(device, splits, skipped, start.source, start.folder, tokenizer, template, pairs, estimate,
                    extra={"start": start})


def load(cfg: Config, prepared: Prepared) -> Built:
    """The starting weights, then its adapter trained further (a finished LoRA run) or the method applied; and the
    reference: a frozen second copy where the method trains the base weights themselves."""
    built = load_start(cfg, prepared)
    if prepared.extra["start"].adapter and not TASK_RULES[cfg.task].reference_free:
        log("a frozen copy of the starting adapter is the reference")
    built.extra["ref_model"] = None
    if not method_of(cfg.method).adapter and not TASK_RULES[cfg.task].reference_free:
        # the reference is a second, frozen copy of the starting weights
        built.extra["ref_model"] = load_model(prepared.folder, built.extra["dtype"], prepared.device,
                                              cfg.model.trust_remote_code, cfg.model.attn_implementation,
                                              built.extra["load_kwargs"]).eval().requires_grad_(False)
    log(f"{cfg.task} with beta {cfg.preference.beta}, loss {'+'.join(loss_types(cfg))}")
    return built


def loss_types(cfg: Config) -> list[str]:
    return list(cfg.preference.loss_type) or {"kto": ["kto"], "orpo": ["orpo"], "simpo": ["simpo"]}.get(cfg.task,
                                                                                                      ["sigmoid"])


def score_base(cfg: Config, prepared: Prepared, built: Built, out_dir: Path) -> dict | None:
    """The starting model on the test split, its chosen answers as references (kept across a resume)."""
    splits, before_file = prepared.splits, out_dir / "eval_base.json"
    if not (cfg.eval.compare_base and splits.test):
        return None
    if before_file.is_file():
        return json.loads(before_file.read_text())
    before = score_split(built.model, prepared.tokenizer, prepared.template, splits.test,
                         prepared.encoded["test_sft"], cfg, built.amp, "start").as_dict()
    write_json(before_file, before)
    return before


def held_out_split(pairs: dict) -> str:
    """The split whose pairs judge the preference: test, else val."""
    return "test" if pairs["test"] else "val"


def held_out_start(cfg: Config, prepared: Prepared, built: Built, out_dir: Path) -> dict | None:
    """ORPO and SimPO: the starting model's length-normalised reward on the held-out pairs, to set beside the tuned
    model's (kept across a resume). DPO and KTO need none: before training the policy is its reference, and the
    implicit reward is 0 for every answer."""
    pairs, held_name = prepared.encoded, held_out_split(prepared.encoded)
    start_file = out_dir / "preference_start.json"
    if not (TASK_RULES[cfg.task].reference_free and pairs[held_name]):
        return None
    if start_file.is_file():
        return json.loads(start_file.read_text())
    start = {"split": held_name, **length_normalised_rewards(built.model, pairs[held_name], cfg.preference.beta,
                                                             prepared.tokenizer.pad_token_id, cfg.train.batch_size,
                                                             built.amp)}
    write_json(start_file, start)
    return start


def train(cfg: Config, prepared: Prepared, built: Built, out_dir: Path, resume: bool) -> Fitted:
    """`fit` on TRL's trainer for the task (trainer_for), given weitiao's tokenized rows."""
    trainer_class, rows, specific = trainer_for(cfg)
    pairs = prepared.encoded
    train_rows, has_val = rows(pairs["train"]), bool(pairs["val"])
    args = build_training_args(
        cfg, out_dir, prepared.device, built.amp, has_val, len(train_rows), beta=cfg.preference.beta,
        max_length=None,  # pairs are already cut to data.max_length, prompt first
        gradient_checkpointing=cfg.train.gradient_checkpointing, **specific)
    reference = {} if TASK_RULES[cfg.task].reference_free else {"ref_model": built.extra["ref_model"]}
    trainer = trainer_class(
        model=built.model, args=args, processing_class=prepared.tokenizer, train_dataset=train_rows,
        eval_dataset=rows(pairs["val"]) if has_val else None, **reference)
    return fit(trainer, cfg, out_dir, prepared.device, resume,
               advice="Lower train.learning_rate or raise preference.beta.")


def trainer_for(cfg: Config):
    """(trainer class, rows from pairs, the task's own training arguments): DPOTrainer; KTOTrainer on the pairs
    taken apart; ORPOTrainer; CPOTrainer with the SimPO loss (cpo_alpha 0: no NLL term, as in the SimPO paper)."""
    from trl import DPOConfig, KTOConfig

    from weitiao.training.preference import (TokenizedDPOTrainer, TokenizedKTOTrainer, pair_dataset,
                                             reference_free_trainers, unpaired_dataset)

    pref, losses = cfg.preference, loss_types(cfg)
    if cfg.task == "kto":  # rows: (prompt, chosen, desirable) and (prompt, rejected, undesirable), in a seeded order
        return TokenizedKTOTrainer, lambda split: unpaired_dataset(split, cfg.train.seed), dict(
            args_class=KTOConfig, loss_type=losses[0], desirable_weight=pref.desirable_weight,
            undesirable_weight=pref.undesirable_weight,
            train_sampling_strategy="sequential")  # the KL rows were built batch by batch, in order
    if cfg.task in ("orpo", "simpo"):
        orpo_trainer, cpo_trainer, orpo_config, cpo_config = reference_free_trainers()
        if cfg.task == "orpo":
            return orpo_trainer, pair_dataset, dict(args_class=orpo_config)
        return cpo_trainer, pair_dataset, dict(args_class=cpo_config, loss_type="simpo", cpo_alpha=0.0,
                                               simpo_gamma=pref.simpo_gamma)
    return TokenizedDPOTrainer, pair_dataset, dict(args_class=DPOConfig, loss_type=losses,
                                                   loss_weights=list(pref.loss_weights) or None,
                                                   label_smoothing=pref.label_smoothing)


def score_tuned(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted):
    """(held-out pairs, test split): does the tuned policy prefer the chosen answers, by its implicit reward
    beta * log(pi / ref)? Computed by weitiao the same way for DPO and KTO (TRL logs it for DPO only); for ORPO and
    SimPO, which have no reference, by the length-normalised reward beta / |y| * log pi(y|x). Then the tuned
    policy's answers on the test prompts."""
    pairs, tokenizer, held_name = prepared.encoded, prepared.tokenizer, held_out_split(prepared.encoded)
    held_out = tuned = None
    if pairs[held_name] and TASK_RULES[cfg.task].reference_free:  # no reference: the length-normalised reward
        held_out = {"split": held_name, **length_normalised_rewards(
            fitted.model, pairs[held_name], cfg.preference.beta, tokenizer.pad_token_id, cfg.train.batch_size,
            built.amp)}
    elif pairs[held_name]:
        held_out = {"split": held_name, **implicit_rewards(fitted.model, pairs[held_name], cfg.preference.beta,
                                                           tokenizer.pad_token_id, built.extra["ref_model"],
                                                           cfg.train.batch_size, built.amp)}
        log(f"held-out {held_name} pairs ({len(pairs[held_name])}): reward accuracy "
            f"{held_out['reward_accuracy']:.4f}, margin {held_out['reward_margin']:.4f}")
    if prepared.splits.test:
        tuned = score_split(fitted.model, tokenizer, prepared.template, prepared.splits.test, pairs["test_sft"], cfg,
                            built.amp, "tuned").as_dict()
    return held_out, tuned


def save(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, held_out, tuned) -> TrainResult:
    """The trained weights only (not TRL's "ref" adapter), metrics and predictions, then the comparison."""
    out_dir, start = Path(cfg.output.dir), prepared.extra["start"]
    saved = save_policy(fitted.model, prepared.tokenizer, out_dir, cfg)
    common = fitted.common_metrics(prepared.device, prepared.estimate, reward_accuracy="eval_rewards/accuracies",
                                   reward_margin="eval_rewards/margins")
    metrics = {
        "task": cfg.task,
        "method": cfg.method.name,
        "start": {"model": start.source.label, "run": str(start.run_dir) if start.run_dir else None,
                  "adapter": start.adapter},
        "params": built.params(),
        "base_weights": built.footprint,
        "train": {**fitted.train_metrics(precision_name(built.amp)),
                  "pairs_per_s": fitted.per_second(len(prepared.encoded["train"])), "loss": loss_types(cfg)},
        **common,
        "preference": held_out,
        "preference_start": built.extra["preference_start"],  # ORPO, SimPO: the same held-out pairs before training
        # "base" is the starting model (e.g. the SFT run), scored with the chosen answers as references
        "test": {"rows": tuned["rows"] if tuned else 0, "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
        "data": {"train_pairs": len(prepared.encoded["train"])},
    }
    if tuned:
        write_predictions(out_dir / "predictions.jsonl",
                          prediction_rows(prepared.splits.test, tuned, base, rejected=lambda ex: ex.rejected))
    tables = ()
    if held_out:
        before, numbers = built.extra["preference_start"], lambda d: {k: v for k, v in d.items()
                                                                      if k not in ("split", "pairs")}
        tables = (comparison_table(f"held-out {held_out['split']} pairs ({held_out['pairs']})",
                                   {"start": numbers(before), "tuned": numbers(held_out)} if before
                                   else {"tuned": numbers(held_out)}),)
    conclude(cfg, out_dir, fitted.trainer, metrics, saved, base, tuned, tuned["rows"] if tuned else 0,
             base_label="start", tables=tables)
    return TrainResult(metrics, fitted.model, prepared.tokenizer, out_dir)


def save_policy(model, tokenizer, out_dir: Path, cfg: Config) -> str:
    """The trained policy as an SFT run saves it: adapter/ (the "default" adapter alone) or model/."""
    if method_of(cfg.method).adapter:
        folder = out_dir / "adapter"
        model.save_pretrained(str(folder), selected_adapters=["default"])
    else:
        folder = out_dir / "model"
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    return str(folder)
