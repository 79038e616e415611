"""The demo task: "list exactly N items of a category, in a fixed numbered format".

A base chat model answers such requests with a preamble, a different layout or the wrong count; a few hundred
examples of fine-tuning make it answer with exactly N lines "1. Item" ... "N. Item" and stop. The count is
checkable, so the effect of fine-tuning shows as one number (the `count_list` metric).

`build_splits(seed)` is deterministic: the same seed always gives the same rows. The (category, N, phrasing)
combinations of the train, val and test splits are disjoint.
"""
from __future__ import annotations

import random
from pathlib import Path

CATEGORIES: dict[str, list[str]] = {
    "fruits": ["apple", "banana", "cherry", "mango", "pear", "plum", "kiwi", "grape", "peach", "lemon", "lime",
               "apricot", "papaya", "fig"],
    "vegetables": ["carrot", "potato", "onion", "spinach", "broccoli", "cabbage", "celery", "pea", "leek",
                   "radish", "turnip", "lettuce", "kale"],
    "animals": ["dog", "cat", "horse", "lion", "tiger", "zebra", "rabbit", "wolf", "bear", "fox", "deer",
                "camel", "otter"],
    "birds": ["eagle", "sparrow", "robin", "parrot", "owl", "swan", "crow", "pigeon", "falcon", "heron", "duck",
              "penguin"],
    "colors": ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "gray",
               "teal"],
    "countries": ["France", "Japan", "Brazil", "Canada", "Kenya", "India", "Norway", "Mexico", "Egypt", "Chile",
                  "Spain", "Vietnam", "Peru"],
    "sports": ["football", "tennis", "golf", "rugby", "cricket", "hockey", "boxing", "rowing", "cycling",
               "baseball", "volleyball", "swimming"],
    "musical instruments": ["piano", "violin", "guitar", "flute", "drums", "cello", "trumpet", "harp",
                            "clarinet", "saxophone", "oboe", "banjo"],
    "metals": ["iron", "copper", "gold", "silver", "zinc", "tin", "lead", "nickel", "aluminium", "platinum",
               "cobalt", "titanium"],
    "planets and moons": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune",
                          "Titan", "Europa", "Io", "Ganymede"],
    "programming languages": ["Python", "Java", "Rust", "Go", "Ruby", "Swift", "Kotlin", "Haskell", "Perl",
                              "Scala", "Julia", "Lua"],
    "trees": ["oak", "pine", "maple", "birch", "willow", "cedar", "elm", "ash", "spruce", "beech", "poplar",
              "cypress"],
    "flowers": ["rose", "tulip", "daisy", "lily", "orchid", "sunflower", "violet", "lotus", "iris", "poppy",
                "jasmine", "peony"],
    "kitchen tools": ["knife", "spoon", "whisk", "ladle", "grater", "peeler", "spatula", "colander", "tongs",
                      "rolling pin", "sieve", "kettle"],
    "cities": ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Berlin", "Madrid", "Sydney", "Toronto",
               "Nairobi", "Seoul", "Dublin"],
    "drinks": ["water", "tea", "coffee", "milk", "juice", "lemonade", "cocoa", "soda", "smoothie", "cider",
               "kefir", "espresso"],
    "body parts": ["hand", "foot", "knee", "elbow", "shoulder", "ankle", "wrist", "neck", "ear", "nose", "chin",
                   "thumb"],
    "clothes": ["shirt", "jacket", "scarf", "hat", "sock", "glove", "dress", "skirt", "coat", "sweater", "boot",
                "belt"],
    "insects": ["ant", "bee", "wasp", "beetle", "moth", "butterfly", "fly", "cricket", "grasshopper",
                "ladybug", "dragonfly", "termite"],
    "vehicles": ["car", "bus", "truck", "bicycle", "train", "tram", "boat", "plane", "scooter", "van",
                 "motorcycle", "ferry"],
}

PHRASINGS = [
    "List {n} {category}.",
    "Give me {n} {category}.",
    "Name {n} {category}, please.",
    "Write a numbered list of {n} {category}.",
    "I need exactly {n} {category}. What are they?",
    "Can you list {n} {category} for me?",
]

# Sizes of the bundled splits.
SPLIT_SIZES = {"train": 480, "val": 40, "test": 80}


def answer(items: list[str]) -> str:
    return "\n".join(f"{k}. {item[0].upper() + item[1:]}" for k, item in enumerate(items, start=1))


def make_row(category: str, n: int, phrasing: int, rng: random.Random) -> dict:
    items = rng.sample(CATEGORIES[category], n)
    question = PHRASINGS[phrasing].format(n=n, category=category)
    return {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer(items)}],
        "meta": {"category": category, "n": n, "phrasing": phrasing},
    }


def build_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    combos = [(c, n, p) for c in CATEGORIES for n in range(1, 11) for p in range(len(PHRASINGS))]
    rng.shuffle(combos)
    if sum(sizes.values()) > len(combos):
        raise ValueError(f"at most {len(combos)} rows with disjoint (category, N, phrasing)")
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [make_row(c, n, p, rng) for c, n, p in combos[start: start + size]]
        start += size
    return out


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_splits(seed))


# ---------------------------------------------------------------- one phrasing (the rephrasing demo)

ONE_PHRASING_SIZES = {"train": 140, "val": 20, "test": 40}


def build_one_phrasing_splits(seed: int = 0, phrasing: int = 0,
                              sizes: dict[str, int] = ONE_PHRASING_SIZES) -> dict[str, list[dict]]:
    """Every question in the one phrasing PHRASINGS[phrasing] ("List {n} {category}." by default), with disjoint
    (category, N) combinations across splits: a model trained on it has seen one way of asking. `weitiao eval
    --rephrase` then asks the test questions in the other phrasings (examples/rephrase/)."""
    rng = random.Random(seed)
    combos = [(c, n) for c in CATEGORIES for n in range(1, 11)]
    rng.shuffle(combos)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [make_row(c, n, phrasing, rng) for c, n in combos[start: start + size]]
        start += size
    return out


def write_one_phrasing_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_one_phrasing_splits(seed))


# ---------------------------------------------------------------- preference pairs (task dpo / reward)

def rejected_answer(category: str, items: list[str], rng: random.Random) -> str:
    """A plausible wrong answer to the same request: the wrong count, or the right items in the wrong format."""
    n = len(items)
    spare = [x for x in CATEGORIES[category] if x not in items]
    cap = lambda s: s[0].upper() + s[1:]  # noqa: E731
    kinds = ["fewer", "more", "preamble", "bullets", "one_line", "chatter"]
    if n == 1:
        kinds.remove("fewer")
    if not spare:
        kinds.remove("more")
    kind = rng.choice(kinds)
    if kind == "fewer":
        return answer(items[:-1])
    if kind == "more":
        return answer(items + [rng.choice(spare)])
    if kind == "preamble":
        return f"Sure! Here are {n} {category}:\n" + answer(items)
    if kind == "bullets":
        return "\n".join(f"- {cap(x)}" for x in items)
    if kind == "one_line":
        return ", ".join(cap(x) for x in items) + "."
    return answer(items) + "\n\nLet me know if you would like more!"


def build_preference_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    """The demo splits as preference pairs: the prompt and correct list of `build_splits`, and a rejected answer.

    Same prompts and (category, N, phrasing) split as the SFT demo, so a DPO run on them starts from the
    quickstart's SFT run without test leakage."""
    rng = random.Random(seed + 1)
    out = {}
    for name, rows in build_splits(seed, sizes).items():
        pairs = []
        for row in rows:
            question, chosen = row["messages"][0]["content"], row["messages"][1]["content"]
            items = [line.split(". ", 1)[1].lower() for line in chosen.splitlines()]
            category = row["meta"]["category"]
            items = [next(x for x in CATEGORIES[category] if x.lower() == item) for item in items]
            pairs.append({"prompt": question, "chosen": chosen, "rejected": rejected_answer(category, items, rng),
                          "meta": row["meta"]})
        out[name] = pairs
    return out


def write_preference_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_preference_splits(seed))
