"""Add rephrased copies of the training questions to the training data: config -> training rows -> rephrasings ->
one new JSONL file (messages format), original rows first.

The answers are copied unchanged; only the last user turn is reworded. Validation and test rows are not touched,
so `weitiao eval --rephrase` still asks the test questions in words the run has not trained on, as long as the
evaluation's rephrasings come from other rules or another model than the augmentation's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from weitiao.config import Config
from weitiao.data.dataset import load_splits
from weitiao.errors import WeitiaoError
from weitiao.evaluation.rephrase import check_source, last_question, rephrased_examples, rephrasings_for
from weitiao.workflows.common import log


def run(cfg: Config, out: str, overwrite: bool = False) -> dict:
    # ---- where the result goes: never over an existing file without --overwrite
    out_path = Path(out)
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

    # ---- rephrasings, checked (and cached when a model writes them)
    rephrasings = rephrasings_for(cfg, [last_question(ex) for ex in train], log)
    extra = rephrased_examples(train, rephrasings, cfg.rephrase.k)

    # ---- the new training file, written whole or not at all
    rows = [{"messages": ex.as_messages()} for ex in train + extra]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out_path)
    log(f"wrote {len(rows)} rows to {out_path}: {len(train)} original + {len(extra)} rephrased (messages format); "
        f"train on it with data.format=messages data.train={out_path}")
    return {"original": len(train), "rephrased": len(extra), "out": str(out_path)}
