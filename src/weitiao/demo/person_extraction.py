"""The extraction demo: alpaca rows with an instruction, a paragraph about a person as input, and a JSON answer.

    instruction: "Extract the person's name, age, city and job as JSON."
    input:       "Noah Garcia, 39, works as a pilot in Austin and has lived there for six years."
    output:      {"name": "Noah Garcia", "age": 39, "city": "Austin", "job": "pilot"}

Every answer value is stated in the input, so a rephrasing that rewords the whole turn can lose a fact the copied
answer still holds; a rephrasing of the instruction alone cannot. That makes it the test bed of the rephrasing
checks (`weitiao data augment --rephrase`, `weitiao eval --rephrase`). Several rows share each instruction, as
real extraction sets do.

`build_splits(seed)` is deterministic: the same seed always gives the same rows. Train and test use disjoint
first names, so a test paragraph is never a training one.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

FIRST = ["Noah", "Emma", "Liam", "Olivia", "Mateo", "Sofia", "Arjun", "Priya", "Kenji", "Yuki", "Omar", "Layla",
         "Lucas", "Chloe", "Ethan", "Amara", "Diego", "Hana", "Felix", "Nora", "Ivan", "Zara", "Tariq", "Mei",
         "Jonas", "Elena", "Kwame", "Ines", "Ravi", "Grace", "Hugo", "Aisha", "Samuel", "Lina", "Marco", "Freya",
         "Tomas", "Wendy", "Xavier", "Yara"]
LAST = ["Garcia", "Smith", "Nguyen", "Okafor", "Silva", "Kowalski", "Tanaka", "Haddad", "Novak", "Rossi", "Patel",
        "Muller", "Johansson", "Mensah", "Dubois", "Kim", "Fischer", "Moreau", "Costa", "Ibrahim"]
CITIES = ["Austin", "Denver", "Porto", "Lyon", "Osaka", "Nairobi", "Krakow", "Seville", "Boston", "Melbourne",
          "Toronto", "Lisbon", "Hamburg", "Dublin", "Chennai", "Bogota"]
JOBS = ["pilot", "chef", "engineer", "painter", "nurse", "teacher", "architect", "plumber", "lawyer", "pharmacist",
        "carpenter", "journalist", "dentist", "librarian", "farmer", "photographer"]

INSTRUCTIONS = [
    "Extract the person's name, age, city and job as JSON.",
    "Read the paragraph and return a JSON object with the keys name, age, city and job.",
    "Fill in name, age, city and job for the person described below. Answer with JSON only.",
    "Turn this description of a person into JSON with name, age, city and job.",
]
PARAGRAPHS = [
    "{name}, {age}, works as a {job} in {city} and has lived there for {years} years.",
    "Meet {name}: a {age}-year-old {job} based in {city}.",
    "{name} is {age} years old. After {years} years in {city}, {first} still loves being a {job}.",
    "Our new neighbour is {name}, a {job} from {city}, who turned {age} last spring.",
    "At {age}, {name} runs a small practice as a {job} in {city}.",
]
SPLIT_SIZES = {"train": 600, "val": 40, "test": 100}


def make_row(first: str, rng: random.Random) -> dict:
    name = f"{first} {rng.choice(LAST)}"
    age, city, job = rng.randint(21, 74), rng.choice(CITIES), rng.choice(JOBS)
    paragraph = rng.choice(PARAGRAPHS).format(name=name, first=first, age=age, city=city, job=job,
                                              years=rng.randint(2, 15))
    answer = {"name": name, "age": age, "city": city, "job": job}
    return {"instruction": rng.choice(INSTRUCTIONS), "input": paragraph, "output": json.dumps(answer)}


def build_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    firsts = list(FIRST)
    rng.shuffle(firsts)
    held_out = len(firsts) // 4  # val and test draw from these first names only
    pools = {"train": firsts[held_out:], "val": firsts[:held_out], "test": firsts[:held_out]}
    return {name: [make_row(rng.choice(pools[name]), rng) for _ in range(size)] for name, size in sizes.items()}


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_splits(seed))
