"""Check a config's data without training: config -> read every row -> tokenize -> duplicates/leakage -> report.

For `task: dpo`, `kto` and `reward` the rows are tokenized as pairs: the lengths are the prompt plus the longer
answer, and the preview shows the rejected answer under the chosen one.

Bad rows (unparsable, wrong types, missing or empty fields, unknown roles, turns out of order, empty answers,
invalid UTF-8) are listed with file, line and reason, as `validate` and `train` name them (the same readers and
encoders); the exit status is 1 when there is any. Rows the over-long policy truncates or drops, duplicates and
leakage are counted and listed as warnings.
"""
from __future__ import annotations

import dataclasses

from collections import Counter
from pathlib import Path

from weitiao.config import PAIR_TASKS, Config
from weitiao.console import log
from weitiao.data.check import find_overlaps, length_stats, render_preview
from weitiao.data.dataset import encode_pair_split, encode_split, load_splits
from weitiao.data.encode import IGNORE_INDEX, Encoded
from weitiao.data.readers import BadRow
from weitiao.models.resolve import find_model
from weitiao.runs import write_json

MAX_PRINTED = 200  # bad rows printed; the JSON report has all


def file_of(where: str) -> str:
    """'data/x.jsonl line 7' -> 'data/x.jsonl'."""
    head, _, tail = where.rpartition(" ")
    if tail.isdigit() and head.endswith((" line", " row")):
        return head.rsplit(" ", 1)[0]
    return where


def run(cfg: Config, preview: int = 2, out: str | None = None) -> int:
    # ---- read every row, keeping the bad ones
    # a streamed training split (data.streaming) is read whole here: checking every row is this command's job
    splits = load_splits(dataclasses.replace(cfg.data, streaming=False), cfg.base_dir, skip_bad_rows=True,
                         need_train=False)
    bad: list[BadRow] = list(splits.bad)

    # ---- tokenize with the model's template (no weights are loaded). Rows the over-long policy drops are
    # counted and listed, as `train` and `validate` count them, but they are not bad rows
    _, _, tokenizer, template = find_model(cfg)
    encoded, rejected, stats = encode_splits(cfg, splits, tokenizer, template, bad)
    dropped = [b for b in bad if b.kind == "over-long"]
    bad = [b for b in bad if b.kind != "over-long"]

    # ---- duplicates inside train, leakage from train into val and test
    threshold = cfg.data.near_duplicate_threshold
    dup = find_overlaps(splits.train, None, threshold)  # what is left after exact duplicates were dropped
    leaks = {name: find_overlaps(splits.train, getattr(splits, name), threshold) for name in ("val", "test")}

    # ---- report
    per_file = counts_per_file(splits, bad, dropped)
    log_rows(per_file, bad)
    for b in dropped[:MAX_PRINTED]:
        log(f"  {b.where}: dropped by data.overlong ({cfg.data.overlong}): {b.reason}")
    log_overlaps(splits, dup, leaks, threshold)
    for name, st in stats.items():
        if st:
            log(f"tokens per {name} row: min {st['min']}, median {st['median']}, p95 {st['p95']}, max {st['max']}; "
                f"{st['over_max_length']} over data.max_length {st['max_length']} ({cfg.data.overlong})")
    for i, enc in enumerate(encoded["train"][:preview]):
        log(f"\npreview {i + 1} (trained tokens in ⟦ ⟧):\n{render_preview(enc, tokenizer)}")
        if rejected:
            log(f"rejected answer: ⟦{tokenizer.decode(rejected['train'][i])}⟧")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), {
            "files": {f: dict(c) for f, c in per_file.items()},
            "bad_rows": [b.as_dict() for b in bad],
            "dropped_over_long": [b.as_dict() for b in dropped],
            "duplicates": {"dropped": [{"row": d.where, "repeats": k.where} for d, k in splits.duplicates],
                           **dup.as_dict()},
            "leakage": {name: ov.as_dict() for name, ov in leaks.items()},
            "tokens": stats,
            "template": template.describe(),
        })
        log(f"\nwrote {out}")
    return 1 if bad else 0


def encode_splits(cfg: Config, splits, tokenizer, template, bad: list[BadRow]):
    """(encoded, rejected, stats) per split. Preference rows are encoded as pairs, so an over-long rejected answer
    is found too; `encoded` then holds them as SFT rows ending with the chosen answer (what the stats and the
    preview show) and `rejected` the rejected answers' ids."""
    stats, encoded, rejected = {}, {}, {}
    for name in ("train", "val", "test"):
        lengths: list[int] = []
        if cfg.task in PAIR_TASKS:
            pairs = encode_pair_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                      skipped=bad, lengths=lengths)
            encoded[name] = [Encoded(p.prompt_ids + p.chosen_ids, [IGNORE_INDEX] * len(p.prompt_ids) + p.chosen_ids)
                             for p in pairs]
            rejected[name] = [p.rejected_ids for p in pairs]
        else:
            encoded[name] = encode_split(getattr(splits, name), template, tokenizer, cfg.data, name, splits.report,
                                         skipped=bad, lengths=lengths)
        stats[name] = length_stats(encoded[name], lengths, cfg.data.max_length)
    return encoded, rejected, stats


def counts_per_file(splits, bad: list[BadRow], dropped: list[BadRow]) -> dict[str, Counter]:
    """Rows read fine, bad, duplicated and dropped for their length, per data file."""
    per_file: dict[str, Counter] = {}
    for name in ("train", "val", "test"):
        for ex in getattr(splits, name):
            per_file.setdefault(file_of(ex.where), Counter())["ok"] += 1
    for ex, _ in splits.duplicates:
        per_file.setdefault(file_of(ex.where), Counter())["duplicate"] += 1
    for b in bad:
        per_file.setdefault(file_of(b.where), Counter())["bad"] += 1
    for b in dropped:  # read fine, then dropped for its length by the configured policy
        c = per_file.setdefault(file_of(b.where), Counter())
        c["ok"] -= 1
        c["dropped"] += 1
    return per_file


def log_rows(per_file: dict[str, Counter], bad: list[BadRow]) -> None:
    width = max([len(f) for f in per_file] + [4]) + 2
    log(f"{'file':<{width}}{'ok':>8}{'bad':>8}{'dup':>8}{'dropped':>9}")
    for f, c in per_file.items():
        log(f"{f:<{width}}{c['ok']:>8}{c['bad']:>8}{c['duplicate']:>8}{c['dropped']:>9}")
    if not bad:
        log("\nno bad rows")
        return
    kinds = Counter(b.kind for b in bad)
    log(f"\n{len(bad)} bad row(s): " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    for b in bad[:MAX_PRINTED]:
        log(f"  {b.where}: [{b.kind}] {b.reason}")
    if len(bad) > MAX_PRINTED:
        log(f"  ... and {len(bad) - MAX_PRINTED} more (all are in --out)")


def log_overlaps(splits, dup, leaks: dict, threshold: float) -> None:
    log(f"\nduplicates in train: {len(splits.duplicates)} exact copies dropped (data.drop_duplicates); "
        f"{len(dup.exact)} equal after normalisation, {len(dup.near)} near (similarity >= {threshold})")
    for dropped, kept in splits.duplicates[:20]:
        log(f"  {dropped.where} repeats {kept.where} (dropped)")
    for p in (dup.exact + dup.near)[:20]:
        log(f"  {p.b} repeats {p.a} ({p.similarity:.2f})")
    for name, ov in leaks.items():
        if getattr(splits, name):
            log(f"leakage train -> {name}: {len(ov.exact)} exact, {len(ov.near)} near")
            for p in (ov.exact + ov.near)[:20]:
                log(f"  {p.b} matches {p.a} ({p.similarity:.2f})")
