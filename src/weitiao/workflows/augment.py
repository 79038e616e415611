"""Add rephrased copies of the training questions to the training data: config -> training rows -> rephrasings ->
one new JSONL file (alpaca rows stay alpaca, other chat formats become messages), original rows first, and a
report beside it.

The answers are copied unchanged. By default only the instruction of the last user turn is reworded
(`rephrase.target`); an alpaca row's input, or pasted context, stays as it is. Every accepted rewording states
every answer value that the original question stated (`rephrase.problems`), and each new row is audited once
more before it is written. Validation and test rows are not touched; the report records which rephraser made the
file, and `weitiao eval --rephrase` refuses to evaluate a run trained on it with that same rephraser.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from weitiao.config import Config
from weitiao.console import log
from weitiao.data.dataset import load_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation.rephrase import (
    augment_report_path,
    check_source,
    last_question,
    rephrased_examples,
    states,
    values_to_keep,
)
from weitiao.evaluation.rephraser import rephrasings_for
from weitiao.runs import write_json


def run(cfg: Config, out: str, overwrite: bool = False) -> dict:
    # ---- where the result goes: never over an existing file without --overwrite
    out_path = Path(out)
    report_path = augment_report_path(out_path)
    if out_path.exists() and not overwrite:
        raise WeitiaoError(f"--out: {out_path} exists; choose another file or pass --overwrite to replace it")

    # ---- the rules (if any) and the training rows, read and checked as training would
    check_source(cfg)
    splits = load_splits(cfg.data, cfg.base_dir)
    train = splits.train
    if any(ex.text is not None for ex in train):
        raise WeitiaoError(f"data.format {cfg.data.format}: rows without a question cannot be rephrased; augment "
                           "chat data (alpaca, sharegpt, messages, chatglm)")
    if cfg.data.val_ratio or cfg.data.test_ratio:
        log("note: val/test were split off the training file by ratio; the new file holds the training rows only, "
            "so give the new config the same val/test rows explicitly")

    # ---- rephrasings, checked (and cached after every batch when a model writes them), then audited per row
    started = time.time()
    rephrasings = rephrasings_for(cfg, train, log)
    extra, dropped = audited(train, rephrased_examples(train, rephrasings, cfg.rephrase.k))

    # ---- the new training file and its report, each written whole or not at all
    fmt = "alpaca" if cfg.data.format == "alpaca" else "messages"
    rows = [as_row(ex, fmt) for ex in train + extra]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = {"out": str(out_path), "original": len(train), "rephrased": len(extra),
              "dropped_by_the_audit": dropped, "seconds": round(time.time() - started, 1),
              "per_question": cfg.rephrase.k, "source_id": rephrasings.source_id,
              "coverage": rephrasings.coverage(train, cfg.rephrase.k)}
    write_json(report_path, report)
    os.replace(tmp, out_path)
    log(f"wrote {len(rows)} rows to {out_path}: {len(train)} original + {len(extra)} rephrased ({fmt} format), "
        f"in {report['seconds']} s; report in {report_path}; train on it with data.format={fmt} "
        f"data.train={out_path}")
    if cfg.data.columns:
        log(f"note: {out_path} uses {fmt}'s own field names, not the ones data.columns maps")
    return report


def as_row(example, fmt: str) -> dict:
    """A training row in `fmt`: alpaca (an alpaca row's user turn is its instruction, a blank line and its
    input, so the first paragraph goes back to `instruction` and the rest to `input`) or messages."""
    if fmt != "alpaca":
        return {"messages": example.as_messages()}
    turns = list(example.messages)
    system = turns.pop(0)[1] if turns[0][0] == "system" else None
    instruction, _, extra = turns[-2][1].partition("\n\n")
    row = {"instruction": instruction, "input": extra, "output": turns[-1][1]}
    if system:
        row["system"] = system
    if len(turns) > 2:
        row["history"] = [[turns[i][1], turns[i + 1][1]] for i in range(0, len(turns) - 2, 2)]
    return row


def audited(originals: list, rephrased: list) -> tuple[list, int]:
    """The rephrased rows that still state every answer value their original question stated (all of them, when
    the checks did their work), and how many were dropped."""
    by_where = {ex.where: ex for ex in originals}
    kept = []
    for ex in rephrased:
        original = by_where[ex.where.rsplit(" (rephrasing ", 1)[0]]
        before, after = last_question(original), last_question(ex)
        if all(states(after, v) for v in values_to_keep(before, [original.messages[-1][1]])):
            kept.append(ex)
    if len(kept) < len(rephrased):
        log(f"warning: {len(rephrased) - len(kept)} rephrased row(s) dropped: they no longer state an answer value")
    return kept, len(rephrased) - len(kept)
