"""Reinforcement learning from a reward a program computes (GRPO): prepare -> load -> score_base -> fit ->
score_tuned -> save (see weitiao.stages).

Where a task has a checkable answer but no single right text ("list exactly N items": any N distinct items will
do), supervised fine-tuning can only copy the reference answers; GRPO (Shao et al. 2024, arXiv:2402.03300) lets the
model try, and trains it towards its own answers that score above their group's mean (training.grpo; TRL's
GRPOTrainer runs the loop). What is particular here: rows are questions whose last turn is a reference answer, which
the rewards (grpo.rewards) may compare with; the run starts from a model or a finished run (`find_start`, as
preference optimisation does), and the held-out questions are scored before and after with the same greedy
decoding and metrics as an SFT run, including the same questions asked in other words (eval.rephrase). The run
folder has the SFT run's layout, so `weitiao eval`, `chat`, `serve`, `export` and a later DPO run take it.
"""
from __future__ import annotations

import json
from pathlib import Path

from weitiao.config import Config
from weitiao.console import comparison_table, log
from weitiao.data.dataset import encode_split
from weitiao.data.splits import read_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation import rephrase, rephraser
from weitiao.evaluation.scoring import gap_lines, prediction_rows, score_rephrased_rows, score_split
from weitiao.memory import guard as memory_guard
from weitiao.methods import save_trained
from weitiao.models.loading import pick_device
from weitiao.models.precision import precision_name
from weitiao.models.resolve import find_start
from weitiao.runs import TrainResult, decide_mode, run_folder, write_json, write_predictions
from weitiao.stages import Built, Prepared, conclude, load_start, log_data
from weitiao.training import grpo
from weitiao.training.arguments import build_training_args
from weitiao.training.fit import Fitted, fit


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> TrainResult:
    device = pick_device(cfg.model.device)
    mode = decide_mode(cfg, overwrite, resume)
    prepared = prepare(cfg, device)
    built = load(cfg, prepared)
    with run_folder(cfg, mode, prepared.template, prepared.splits.report, prepared.skipped) as out_dir:
        base, rephrasings = score_base(cfg, prepared, built, out_dir)
    fitted = train(cfg, prepared, built, out_dir, mode == "resume")
    tuned, rephrased = score_tuned(cfg, prepared, built, fitted, rephrasings)
    return save(cfg, prepared, built, fitted, base, tuned, rephrased)


def prepare(cfg: Config, device: str) -> Prepared:
    """Every row read and checked (data.formats: each conversation ends with an assistant turn, the reference
    answer), the starting point found, each reward resolved and tried on the first row's reference, and the
    memory estimated for batch_size answers of grpo.max_completion_length tokens after the longest prompt."""
    splits, skipped = read_splits(cfg)
    if cfg.eval.rephrase:
        rephrase.check_source(cfg)
        rephrase.refuse_the_augmenters_rephraser(cfg, splits.report.get("train_files", []))
    start = find_start(cfg)
    if start.adapter and cfg.grpo.beta > 0:
        raise WeitiaoError(f"grpo.beta: {cfg.grpo.beta} keeps a reference, and for a LoRA run TRL's reference is the "
                           f"model with its adapter off, which is not {start.run_dir}'s model; use grpo.beta 0, or "
                           f"start from `weitiao export {start.run_dir} --out DIR`")
    splits.report["model_source"] = start.source.describe()
    tokenizer, template = start.tokenizer, start.template
    encoded = {name: encode_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                  skipped=skipped) for name in ("train", "val", "test")}
    log_data(splits.report, skipped, template, "questions", len(splits.train))
    rewards = grpo.resolve_rewards(cfg.grpo.rewards, cfg.grpo.reward_weights, device,
                                   batch_size=cfg.eval.generation.batch_size)
    grpo.probe(rewards, splits.train[0])
    longest = max(len(tokenizer(template.render(tokenizer, ex.as_messages()[:-1], add_generation_prompt=True),
                                add_special_tokens=False)["input_ids"]) for ex in splits.train)
    estimate = memory_guard.check(cfg, start.folder, device, longest + cfg.grpo.max_completion_length, log)
    return Prepared(device, splits, skipped, start.source, start.folder, tokenizer, template, encoded, estimate,
                    extra={"start": start, "rewards": rewards})


def load(cfg: Config, prepared: Prepared) -> Built:
    """The starting weights, then its adapter trained further (a finished LoRA run) or the method applied;
    generation ends on the template's end-of-turn tokens, as it does when weitiao scores or serves the model."""
    built = load_start(cfg, prepared)
    built.model.generation_config.eos_token_id = list(prepared.template.stop_ids)
    g = cfg.grpo
    log(f"grpo: {g.num_generations} answers per question, rewards "
        f"{', '.join(f'{r.weight:g} x {r.name}' for r in prepared.extra['rewards'])}, beta {g.beta}, loss "
        f"{g.loss_type}")
    return built


def score_base(cfg: Config, prepared: Prepared, built: Built, out_dir: Path):
    """(starting model's scores, rephrasings): the test split, and the same questions in other words
    (eval.rephrase), before training; kept across a resume."""
    splits, tokenizer, template = prepared.splits, prepared.tokenizer, prepared.template
    base_file, rephrasings_file = out_dir / "eval_base.json", out_dir / "rephrasings.json"
    base = json.loads(base_file.read_text()) if base_file.is_file() else None
    complete = base is not None  # scored before a resume, with the rephrased questions where there are any
    if base is None and cfg.eval.compare_base and splits.test:
        base = score_split(built.model, tokenizer, template, splits.test, prepared.encoded["test"], cfg, built.amp,
                           base_label(prepared)).as_dict()
    rephrasings = (rephrase.Rephrasings.from_dict(json.loads(rephrasings_file.read_text()))
                   if rephrasings_file.is_file() else None)
    if rephrasings is None and cfg.eval.rephrase and splits.test:
        rephrasings = rephraser.rephrasings_for(cfg, splits.test[:cfg.eval.max_samples or None], log,
                                                base=(built.model, tokenizer, template),
                                                seen=rephrase.seen_texts(splits.train, cfg.rephrase.target))
        write_json(rephrasings_file, rephrasings.as_dict())
    if base and not complete:
        if rephrasings:
            base["rephrased"] = score_rephrased_rows(cfg, built.model, tokenizer, template, splits.test,
                                                     rephrasings, built.amp, base_label(prepared), base)
        write_json(base_file, base)
    return base, rephrasings


def base_label(prepared: Prepared) -> str:
    """The column of the model before training: `base`, or `start` when the run continues a finished run."""
    return "start" if prepared.extra["start"].run_dir else "base"


def train(cfg: Config, prepared: Prepared, built: Built, out_dir: Path, resume: bool) -> Fitted:
    """`fit` on TRL's GRPOTrainer, given the questions as prompts and the checked rewards."""
    from trl import GRPOConfig, GRPOTrainer

    g, rewards, examples = cfg.grpo, prepared.extra["rewards"], prepared.splits.train
    args = build_training_args(
        cfg, out_dir, prepared.device, built.amp, False, len(examples) * g.num_generations, args_class=GRPOConfig,
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        temperature=g.temperature, beta=g.beta, loss_type=g.loss_type, scale_rewards=g.scale_rewards,
        reward_weights=[r.weight for r in rewards],
        gradient_checkpointing=cfg.train.gradient_checkpointing)
    trainer = GRPOTrainer(model=built.model, reward_funcs=grpo.reward_functions(rewards, examples), args=args,
                          train_dataset=grpo.prompt_dataset(examples), processing_class=prepared.tokenizer)
    return fit(trainer, cfg, out_dir, prepared.device, resume,
               advice="Lower train.learning_rate or grpo.temperature.")


def score_tuned(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, rephrasings):
    """(tuned scores, rephrased scores): the trained model on the test split and on the rephrased questions."""
    if not prepared.splits.test:
        return None, None
    tokenizer, template, test = prepared.tokenizer, prepared.template, prepared.splits.test
    tuned = score_split(fitted.model, tokenizer, template, test, prepared.encoded["test"], cfg, built.amp,
                        "tuned").as_dict()
    rephrased = score_rephrased_rows(cfg, fitted.model, tokenizer, template, test, rephrasings, built.amp, "tuned",
                                     tuned) if rephrasings else None
    return tuned, rephrased


def save(cfg: Config, prepared: Prepared, built: Built, fitted: Fitted, base, tuned, rephrased) -> TrainResult:
    """The trained weights as an SFT run saves them, metrics with the reward curve, predictions, and the
    comparison: the test split, and the rephrased questions before and after."""
    out_dir, start, rewards = Path(cfg.output.dir), prepared.extra["start"], prepared.extra["rewards"]
    saved = save_trained(fitted.model, prepared.tokenizer, str(out_dir), cfg.method)
    curve = grpo.reward_curve(fitted.history, rewards)
    before = (base or {}).get("rephrased")
    metrics = {
        "task": "grpo",
        "method": cfg.method.name,
        "start": {"model": start.source.label, "run": str(start.run_dir) if start.run_dir else None,
                  "adapter": start.adapter},
        "params": built.params(),
        "base_weights": built.footprint,
        "train": {**fitted.train_metrics(precision_name(built.amp)),
                  "answers_per_s": fitted.per_second(len(prepared.splits.train) * cfg.grpo.num_generations)},
        **fitted.common_metrics(prepared.device, prepared.estimate),
        "rewards": {"names": [r.name for r in rewards], "weights": [r.weight for r in rewards], "curve": curve},
        "test": {"rows": tuned["rows"] if tuned else 0, "base": base["metrics"] if base else None,
                 "tuned": tuned["metrics"] if tuned else None},
        "data": {"train_questions": len(prepared.splits.train)},
    }
    if tuned:
        write_predictions(out_dir / "predictions.jsonl", prediction_rows(prepared.splits.test, tuned, base))
    if rephrased:
        write_json(out_dir / "rephrased.json", {"model": "tuned", "split": "test", "rows": tuned["rows"],
                                                "metrics": tuned["metrics"], "rephrased": rephrased})
        metrics["rephrased"] = {"rows": rephrased["rows"], "metrics": rephrased["metrics"],
                                "base": before["metrics"] if before else None}
    conclude(cfg, out_dir, fitted.trainer, metrics, saved, base, tuned, tuned["rows"] if tuned else 0,
             base_label=base_label(prepared), tables=reward_tables(curve, before, rephrased, base_label(prepared)))
    return TrainResult(metrics, fitted.model, prepared.tokenizer, out_dir)


def reward_tables(curve: list[dict], before: dict | None, rephrased: dict | None, label: str) -> tuple[str, ...]:
    """The mean reward of the first and last logged steps, and the rephrased questions before and after."""
    tables = []
    if curve:
        first, last = curve[0], curve[-1]
        numbers = lambda c: {k: v for k, v in c.items() if k != "step"}  # noqa: E731
        tables.append(comparison_table("sampled answers' mean reward",
                                       {f"step {first['step']}": numbers(first),
                                        f"step {last['step']}": numbers(last)}))
    if rephrased:
        columns = {label: before["metrics"], "tuned": rephrased["metrics"]} if before else \
            {"tuned": rephrased["metrics"]}
        tables.append(comparison_table(f"the test questions asked {rephrased['per_question']} other ways "
                                       f"({rephrased['rows']} rows)", columns))
        tables.append(gap_lines(rephrased))
    return tuple(tables)
