"""The regression demo: score a product review from 1 to 5.

Each review names a product and judges two or three of its aspects with phrases of known polarity (-2 to +2); the
score is 3 plus the mean polarity, so it follows from what the review says, not from a keyword or its length. The
test split reviews products and aspects the training split never shows, with the same phrases (a small encoder
cannot learn a word it never sees). A fresh one-output head predicts about the same number for every review; a
fine-tuned small encoder ranks them nearly in order.

`build_splits(seed)` is deterministic: the same seed always gives the same rows.
"""
from __future__ import annotations

import random
from pathlib import Path

PHRASES: dict[int, list[str]] = {
    2: ["is outstanding", "works perfectly", "exceeded every expectation", "is a joy to use", "is superb"],
    1: ["is good", "works well enough", "is solid", "does the job nicely", "is pleasant"],
    0: ["is okay", "is average", "is fine, nothing special", "is as expected", "is neither good nor bad"],
    -1: ["is disappointing", "feels cheap", "is below par", "could be a lot better", "is a bit annoying"],
    -2: ["is terrible", "broke within a week", "is a complete waste of money", "stopped working at once",
         "is awful"],
}
# the test split draws products and aspects from the second half of each list, which training never shows
PRODUCTS = ["kettle", "desk lamp", "backpack", "keyboard", "blender", "router", "toaster", "monitor", "speaker",
            "e-reader", "camera", "printer", "smartwatch", "vacuum", "projector", "headphones"]
ASPECTS = ["The battery", "The build quality", "The price", "Delivery", "The screen", "Customer service",
           "The sound", "Setup", "The design", "The manual", "The packaging", "The warranty"]
SPLIT_SIZES = {"train": 400, "val": 50, "test": 100}


def review(rng: random.Random, half: str) -> dict:
    products = PRODUCTS[: len(PRODUCTS) // 2] if half == "seen" else PRODUCTS[len(PRODUCTS) // 2:]
    aspects = ASPECTS[: len(ASPECTS) // 2] if half == "seen" else ASPECTS[len(ASPECTS) // 2:]
    chosen = rng.sample(aspects, rng.choice([2, 3]))
    polarities = [rng.choice(list(PHRASES)) for _ in chosen]
    sentences = [f"{a} {rng.choice(PHRASES[p])}." for a, p in zip(chosen, polarities)]
    text = f"Review of the {rng.choice(products)}: " + " ".join(sentences)
    return {"text": text, "label": round(3 + sum(polarities) / len(polarities), 2)}


def build_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    """Splits of {"text", "label"} rows, label a score in [1, 5]; no text appears in two splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for name, size in sizes.items():
        rows: list[dict] = []
        while len(rows) < size:
            row = review(rng, "unseen" if name == "test" else "seen")
            if row["text"] not in seen:
                seen.add(row["text"])
                rows.append(row)
        splits[name] = rows
    return splits


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_splits(seed))
