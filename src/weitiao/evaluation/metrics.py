"""Generation metrics: each scores one prediction against its reference and returns a number in [0, 1].

The score of a split is the mean over rows. New metrics register in `METRICS` by name; the config names them in
`eval.metrics`.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

# "3. Red panda": a number, a dot, one space, then the item
LIST_LINE = re.compile(r"^(\d+)\. (\S.*)$")


def normalize(text: str) -> str:
    """NFKC, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def parse_numbered_list(text: str) -> list[str] | None:
    """The items of a list written exactly as "1. item" lines numbered 1..n and nothing else; else None."""
    lines = text.strip().split("\n")
    items = []
    for k, line in enumerate(lines, start=1):
        m = LIST_LINE.match(line.strip())
        if not m or int(m.group(1)) != k:
            return None
        items.append(m.group(2).strip())
    return items


def count_list(prediction: str, reference: str) -> float:
    """The demo task: 1 when the prediction is a well-formed numbered list with as many items as the reference.

    The required count N is read from the reference answer (itself an N-item list). Any text before or after
    the list, a skipped or repeated number, or a wrong count scores 0.
    """
    want = parse_numbered_list(reference)
    got = parse_numbered_list(prediction)
    if want is None:
        raise ValueError(f"count_list: the reference is not a numbered list: {reference!r}")
    return float(got is not None and len(got) == len(want))


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "count_list": count_list,
}


def score(names: list[str], predictions: list[str], references: list[str]) -> tuple[dict, list[dict]]:
    """Mean of each metric, and the per-row scores."""
    per_row = [{n: METRICS[n](p, r) for n in names} for p, r in zip(predictions, references)]
    means = {n: (sum(row[n] for row in per_row) / len(per_row) if per_row else float("nan")) for n in names}
    return means, per_row
