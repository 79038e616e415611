"""A person picks the better of two answers (the source document's RLHF step), and the choice becomes a training
row.

Two answers to one prompt come from the run's model, with the run's own template (serving.engine): the base model
against the tuned one, or two samples of the tuned one. They are shown in random order as A and B, so the person
does not know which is which. A choice is appended to `RUN/preferences.jsonl` as a `format: preference` row
(prompt, chosen, rejected), which `task: dpo` and `task: reward` read directly; a tie has no chosen answer, so it
goes to `RUN/preference_ties.jsonl`. Each line is written whole with one `write` on a file opened for appending,
under a lock, and flushed to disk: a crash never leaves half a row.
"""
from __future__ import annotations

import json
import os
import random
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import WeitiaoError

CHOICES = ("A", "B", "tie")
MODES = {"base_tuned": "the base model against the tuned one", "samples": "two samples of the tuned model",
         "runs": "this run against another run"}
LOCK = threading.Lock()


@dataclass
class Pair:
    id: str
    run: str
    prompt: str
    answers: dict  # "A" and "B" -> the answer text
    sources: dict  # "A" and "B" -> which model or sample wrote it
    mode: str


def make_pair(engine, run: str, prompt: str, mode: str, max_tokens: int, rng: random.Random,
              other: tuple[str, object] | None = None) -> Pair:
    """Two answers to `prompt`, in random order. `engine`: a serving Engine over the run, with its base served;
    `other`: (name, Engine) of the other run, for mode `runs` (each run answers with its own template)."""
    from weitiao.serving.engine import Sampling

    if mode not in MODES:
        raise WeitiaoError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if not prompt.strip():
        raise WeitiaoError("prompt: empty; type a question or take one from the test split")
    if mode == "base_tuned" and engine.base_name is None:
        raise WeitiaoError(f"run {run}: its model has no adapter to switch off, so there is no base model to compare; "
                           "use two samples")
    if mode == "runs" and (other is None or other[0] == run):
        raise WeitiaoError("other run: choose a second, different run to compare with")
    ids = engine.encode(engine.render([{"role": "user", "content": prompt}]))
    if mode == "runs":
        other_name, other_engine = other
        other_ids = other_engine.encode(other_engine.render([{"role": "user", "content": prompt}]))
        made = {run: engine.complete(ids, Sampling(max_new_tokens=max_tokens)).text,
                other_name: other_engine.complete(other_ids, Sampling(max_new_tokens=max_tokens)).text}
    elif mode == "base_tuned":
        made = {"base": engine.complete(ids, Sampling(max_new_tokens=max_tokens), engine.base_name).text,
                "tuned": engine.complete(ids, Sampling(max_new_tokens=max_tokens)).text}
    else:  # two samples at temperature 0.8, each with its own seed
        seeds = rng.sample(range(1, 2**31), 2)
        made = {f"sample (seed {s})": engine.complete(ids, Sampling(max_new_tokens=max_tokens, temperature=0.8,
                                                                     seed=s)).text for s in seeds}
    order = list(made)
    rng.shuffle(order)
    return Pair(uuid.uuid4().hex, run, prompt, {"A": made[order[0]], "B": made[order[1]]},
                {"A": order[0], "B": order[1]}, mode)


def record(run_dir: Path, pair: Pair, choice: str) -> dict:
    """Append the person's choice; returns the counts so far."""
    if choice not in CHOICES:
        raise WeitiaoError(f"choice: {choice!r} is not one of A, B or tie")
    empty = [key for key in ("A", "B") if not pair.answers[key].strip()]
    if choice != "tie" and empty:
        raise WeitiaoError(f"answer {' and '.join(empty)} is empty: a pair with an empty answer is not a row DPO or a "
                           "reward model can train on; mark a tie or ask for another pair")
    meta = {"pair": pair.id, "mode": pair.mode, "sources": pair.sources, "choice": choice}
    if choice == "tie":
        row, file = {"prompt": pair.prompt, "answers": [pair.answers["A"], pair.answers["B"]], "meta": meta}, \
            run_dir / "preference_ties.jsonl"
    else:
        other = "B" if choice == "A" else "A"
        row, file = {"prompt": pair.prompt, "chosen": pair.answers[choice], "rejected": pair.answers[other],
                     "meta": meta}, run_dir / "preferences.jsonl"
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    with LOCK:
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    return counts(run_dir)


def counts(run_dir: Path) -> dict:
    def lines(name: str) -> int:
        path = run_dir / name
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) \
            if path.is_file() else 0

    return {"pairs": lines("preferences.jsonl"), "ties": lines("preference_ties.jsonl")}


def test_prompts(run_dir: Path, limit: int = 200) -> list[str]:
    """The user turns of the run's test split (from its predictions), to ask again."""
    path = run_dir / "predictions.jsonl"
    if not path.is_file():
        return []
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        row = json.loads(line)
        prompt = row.get("prompt") or row.get("question") or row.get("input")
        if isinstance(prompt, str) and prompt.strip():
            prompts.append(prompt)
    return prompts
