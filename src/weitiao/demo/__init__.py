"""Deterministic demo datasets (count_list: chat rows; support_intent: labelled rows)."""
from __future__ import annotations

import json
import random
from pathlib import Path


def write_split_files(out_dir: str | Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """Write each split as OUT_DIR/<name>.jsonl (UTF-8, one JSON object per line); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in splits.items():
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        written[name] = path
    return written


def disjoint_splits(categories: list[str], phrasings: int, row, seed: int, sizes: dict[str, int]
                    ) -> dict[str, list[dict]]:
    """Splits whose (category, N, phrasing) combinations are disjoint, N from 1 to 10, each row made by
    `row(category, n, phrasing, rng)`; the same seed gives the same rows (this demo and count_list_zh)."""
    rng = random.Random(seed)
    combos = [(c, n, p) for c in categories for n in range(1, 11) for p in range(phrasings)]
    rng.shuffle(combos)
    if sum(sizes.values()) > len(combos):
        raise ValueError(f"at most {len(combos)} rows with disjoint (category, N, phrasing)")
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [row(c, n, p, rng) for c, n, p in combos[start: start + size]]
        start += size
    return out


def numbered_list(items: list[str]) -> str:
    """The demo's answer: "1. Item" lines, each item's first letter upper-cased (a Chinese item is unchanged)."""
    return "\n".join(f"{k}. {item[0].upper() + item[1:]}" for k, item in enumerate(items, start=1))


def list_row(categories: dict[str, list[str]], phrasings: list[str], category: str, n: int, phrasing: int,
             rng: random.Random) -> dict:
    """One chat row of a list-N demo: the question in phrasing `phrasing`, n items of the category as the answer."""
    question = phrasings[phrasing].format(n=n, category=category)
    answer = numbered_list(rng.sample(categories[category], n))
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "meta": {"category": category, "n": n, "phrasing": phrasing}}
