"""Scoring a model on a split: per-row token losses, greedy answers and their metrics, the same rows asked in
other words (eval.rephrase), and the rows of predictions.jsonl."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from weitiao.config import Config
from weitiao.console import log
from weitiao.data.dataset import PadCollator, encode_split
from weitiao.data.encode import IGNORE_INDEX, Encoded, prompt_and_reference
from weitiao.data.formats import Example
from weitiao.errors import WeitiaoError
from weitiao.evaluation.generate import generate
from weitiao.evaluation.metrics import score
from weitiao.evaluation import per_rephrasing
from weitiao.evaluation.rephrase import Rephrasings, last_question, rejected_summary, rephrased_examples


@contextlib.contextmanager
def base_model_context(model):
    """Yields the base model to score: a prompt-learning adapter's plain base model (it adds nothing inside the
    model, and weitiao's virtual-token decoder must not see it), a peft model with its adapters disabled, or the
    model itself for other methods, which have not changed any weight yet when this is used."""
    from weitiao.evaluation.virtual_tokens import uses_virtual_tokens

    if uses_virtual_tokens(model):
        yield model.get_base_model()
    elif hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


@torch.no_grad()
def token_losses(model, encoded: list[Encoded], pad_id: int, batch_size: int = 8,
                 amp_dtype=None) -> list[tuple[float, int]]:
    """Per example: (summed cross-entropy over its label tokens, number of label tokens)."""
    model.eval()
    device = next(model.parameters()).device
    collate = PadCollator(pad_id)
    rows = []
    for start in range(0, len(encoded), batch_size):
        batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[start:start + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits
        # logits (B, T, V) predict token t+1 from position t; prompt-learning adapters also return logits for
        # their n_virtual leading virtual tokens, (B, n_virtual + T, V): keep the last T
        logits = logits[:, -batch["input_ids"].shape[1]:]
        shift_labels = batch["labels"][:, 1:]  # (B, T-1)
        # only the label positions' logits go to fp32 (N, V): an fp32 copy of the whole (B, T, V) logits was
        # 40 rows x 88 tokens x 49,152 x 4 bytes = 0.7 GB per copy for the quickstart's test batches
        keep = shift_labels != IGNORE_INDEX  # (B, T-1)
        per_token = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), shift_labels[keep],
                                                      reduction="none")  # (N,)
        sums = torch.zeros(keep.shape[0], dtype=per_token.dtype, device=per_token.device)
        sums.index_add_(0, keep.nonzero()[:, 0], per_token)  # keep.nonzero() is row-major, as keep's selection
        rows += [(float(s), int(n)) for s, n in zip(sums.tolist(), keep.sum(dim=1).tolist())]
    return rows


def mean_loss(rows: list[tuple[float, int]]) -> float:
    """Mean cross-entropy over all label tokens of per-row (sum, count) pairs: token-weighted, not a mean of row
    or batch means."""
    return sum(s for s, _ in rows) / max(sum(n for _, n in rows), 1)


@dataclass
class SplitScores:
    rows: int  # rows scored (eval.max_samples may cap the split)
    metrics: dict  # loss, perplexity and each generation metric
    predictions: list[str]
    per_row: list[dict]
    row_losses: list[tuple[float, int]]  # per scored row: (summed cross-entropy, label tokens)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "metrics": self.metrics, "predictions": self.predictions, "per_row": self.per_row,
                "row_losses": self.row_losses}


def score_split(model, tokenizer, template, examples: list[Example], encoded: list[Encoded], cfg: Config,
                amp_dtype, label: str) -> SplitScores:
    """Loss/perplexity on `encoded` and generation metrics on `examples`, with `cfg.eval` decoding."""
    started = time.time()
    n = cfg.eval.max_samples or len(examples)
    examples, encoded = examples[:n], encoded[:n]
    log(f"[{label}] test loss on {len(encoded)} rows ...")
    # in training-sized batches: the memory estimate covers a training step at train.batch_size, which holds far
    # more than a forward pass; batches of eval.generation.batch_size (40 in the quickstart) raised its peak RSS
    # from 3.0 to 5.5 GiB on top of what training had left in the allocator
    row_losses = token_losses(model, encoded, tokenizer.pad_token_id, cfg.train.batch_size, amp_dtype)
    loss = mean_loss(row_losses)
    metrics = {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 50.0)), 4)}
    predictions, per_row = [], []
    chat_rows = [ex for ex in examples if ex.text is None]
    if (cfg.eval.metrics or cfg.eval.reward_model) and chat_rows:
        pairs = [prompt_and_reference(ex, template, tokenizer) for ex in chat_rows]
        warning = cut_short_warning([r for _, r in pairs], tokenizer, cfg.eval.generation.max_new_tokens)
        if warning:
            log(f"[{label}] {warning}")
        log(f"[{label}] generating {len(pairs)} answers (greedy={not cfg.eval.generation.do_sample}, "
            f"max_new_tokens={cfg.eval.generation.max_new_tokens}) ...")
        predictions = generate(model, tokenizer, [p for p, _ in pairs], cfg.eval.generation, template.stop_ids,
                               amp_dtype)
        means, per_row = score(cfg.eval.metrics, predictions, [r for _, r in pairs])
        if cfg.eval.reward_model:  # the answers as a trained reward model ranks them (task: reward)
            from weitiao.evaluation.reward import RewardScorer

            scorer = RewardScorer.of(cfg.eval.reward_model, str(next(model.parameters()).device), amp_dtype,
                                     cfg.eval.generation.batch_size)
            rewards = scorer.score(chat_rows, predictions)
            means["reward"] = sum(rewards) / len(rewards)
            for row, r in zip(per_row, rewards):
                row["reward"] = round(r, 5)
        metrics.update({k: round(v, 6) for k, v in means.items()})
    log(f"[{label}] scored in {time.time() - started:.1f}s: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return SplitScores(len(encoded), metrics, predictions, per_row, row_losses)


def cut_short_warning(references: list[str], tokenizer, limit: int) -> str | None:
    """A warning, before generating, when reference answers are longer than `limit` new tokens: their answers would
    be cut short and scored as wrong (a Chinese character costs 2-3 tokens in an English-centred vocabulary)."""
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in references]  # + end of turn
    longer = [n for n in lengths if n > limit]
    if not longer:
        return None
    return (f"warning: {len(longer)} of {len(references)} reference answers are longer than "
            f"eval.generation.max_new_tokens {limit} (the longest: {max(longer)} tokens with its end of turn); "
            f"answers that long will be cut short and score as wrong: set eval.generation.max_new_tokens="
            f"{max(lengths)} or more")


def prediction_rows(examples: list[Example], tuned: dict, base: dict | None, **per_example) -> list[dict]:
    """predictions.jsonl: per scored test row, the prompt, the reference, each model's answer and metric scores,
    and its loss on the row (mean cross-entropy per answer token, and the token count) for `weitiao compare`.
    `per_example` adds fields taken from each example, e.g. rejected=lambda ex: ex.rejected."""
    rows = []
    for i, ex in enumerate(examples[: tuned["rows"]]):
        row = {"where": ex.where}
        if ex.text is None:
            row.update(prompt=ex.messages[-2][1], reference=ex.messages[-1][1])
        else:
            row.update(text=ex.text)
        row.update({k: f(ex) for k, f in per_example.items()})
        for name, scores in (("tuned", tuned), ("base", base)):
            if not scores:
                continue
            if i < len(scores["predictions"]):
                row.update({name: scores["predictions"][i], f"{name}_scores": scores["per_row"][i]})
            losses = scores.get("row_losses") or []
            if i < len(losses):
                row.update({f"{name}_loss": round(losses[i][0] / max(losses[i][1], 1), 6),
                            f"{name}_tokens": losses[i][1]})
        rows.append(row)
    return rows


def score_rephrased(cfg: Config, model, tokenizer, template, examples, rephrasings: Rephrasings, amp, label: str,
                    original_scores: list[dict]) -> dict:
    """The same rows asked again in other words: metrics, each answer, the original questions' own scores
    (`original_scores`, per example) next to them for the gap, and the coverage: how many questions got a
    faithful rephrasing, and what was rejected."""
    import dataclasses

    rows, source, worded = [], [], []  # source[j]: the original row that rows[j] rephrases; worded[j]: how
    for i, ex in enumerate(examples):
        more = rephrased_examples([ex], rephrasings, cfg.rephrase.k)
        rows += more
        source += [i] * len(more)
        worded += rephrasings.reworded(ex, cfg.rephrase.k)
    coverage = rephrasings.coverage(examples, cfg.rephrase.k)
    if not rows:
        raise WeitiaoError(f"--rephrase: no question got a faithful rephrasing ({coverage['rejected'] or 'none'} "
                           "rejected; see the rephrase lines above)")
    encoded = encode_split(rows, template, tokenizer, cfg.data, "rephrased", {})
    every_row = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_samples=0))
    scores = score_split(model, tokenizer, template, rows, encoded, every_row, amp, f"{label}, rephrased")
    result = {"rows": len(rows), "questions": len(examples), "per_question": cfg.rephrase.k,
              "metrics": scores.metrics, "coverage": coverage,
              "predictions": [{"row": i, "where": ex.where, "question": last_question(ex), "text": w[0],
                               "rephrasing": w[1], "prediction": p, "scores": s}
                              for i, ex, w, p, s in zip(source, rows, worded, scores.predictions, scores.per_row)],
              "original": [{"question": last_question(ex), "scores": s} for ex, s in zip(examples, original_scores)]}
    result["by_rephrasing"] = per_rephrasing.by_rephrasing(result)
    result["disagreements"] = per_rephrasing.disagreements(result["by_rephrasing"])
    return result


def score_rephrased_rows(cfg: Config, model, tokenizer, template, examples, rephrasings: Rephrasings, amp,
                        label: str, scores: dict) -> dict | None:
    """`score_rephrased` on the rows `scores` (a score_split result) covers, or None, logged, when none of them
    got a faithful rephrasing: a run is not failed for it, the rejections were logged when the rephrasings were
    made."""
    asked = examples[:scores["rows"]]
    if not rephrasings.coverage(asked, cfg.rephrase.k)["rephrased_rows"]:
        log("rephrased questions: none got a faithful rephrasing, so the rephrased gap is not measured")
        return None
    return score_rephrased(cfg, model, tokenizer, template, asked, rephrasings, amp, label, scores["per_row"])


def gap_lines(rephrased: dict, samples: int = 2000, seed: int = 0) -> str:
    """The coverage and, per metric, the paired gap (rephrased - original) on the questions that got a faithful
    rephrasing; a gap over fewer than MIN_GAP_QUESTIONS questions is shown as not measured."""
    from weitiao.evaluation.report import rephrased_gaps, signed

    c = rephrased["coverage"]
    lines = [f"rephrased: {c['with_rephrasing']} of {c['questions']} questions got a faithful rephrasing "
             f"({c['rephrased_rows']} rows); rejected candidates: {rejected_summary(c['rejected'])}"]
    for g in rephrased_gaps(rephrased, samples, seed):
        lines.append(f"  gap {g['name']}: " + (f"{signed(g['gap'])} [{signed(g['low'])}, {signed(g['high'])}] "
                                               f"({g['original']:.4f} -> {g['rephrased']:.4f})" if g["measured"]
                                               else "not measured") + f" on {g['questions']} questions")
    return "\n".join(lines + per_rephrasing.lines(rephrased))
