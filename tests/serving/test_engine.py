"""The serving engine decodes exactly what evaluation decodes, streams the same text, and honours stop strings and
min_tokens."""
from __future__ import annotations

import io
import json

import pytest

from weitiao.config import GenerationConfig
from weitiao.evaluation.generate import generate
from weitiao.serving import chat
from weitiao.serving.engine import Engine, Sampling
from weitiao.serving.loaded import load


def _conversations(run_dir, n=4):
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()][:n]
    return rows


@pytest.mark.parametrize("run", ["lora_run_dir", "prefix_run_dir"])
def test_engine_greedy_equals_batched_evaluation_and_streams_the_same_text(run, request):
    run_dir = request.getfixturevalue(run)
    loaded = load(str(run_dir), device="cpu")
    engine = Engine(loaded)
    rows = _conversations(run_dir)
    prompts = [engine.render([{"role": "user", "content": r["prompt"]}]) for r in rows]
    batched = generate(loaded.model, loaded.tokenizer, prompts, GenerationConfig(max_new_tokens=12, batch_size=4),
                       loaded.template.stop_ids)
    for prompt, expected, row in zip(prompts, batched, rows):
        sampling = Sampling(max_new_tokens=12)
        finished = engine.complete(engine.encode(prompt), sampling)
        assert finished.text.strip() == expected
        assert finished.text.strip() == row["tuned"]  # what `weitiao train` scored
        result = []
        pieces = list(engine.stream(engine.encode(prompt), sampling, result=result))
        assert "".join(pieces) == finished.text and result[0] == finished


def test_stop_strings_and_min_tokens(tiny_model_dir):
    engine = Engine(load(str(tiny_model_dir), device="cpu"))  # the random base writes varied text
    ids = engine.encode(engine.render([{"role": "user", "content": "Name 3 metals."}]))
    # seeded sampling: varied text (greedy on the random model repeats one token), the same on every call
    settings = dict(max_new_tokens=24, min_new_tokens=24, temperature=1.0, seed=0)
    free = engine.complete(ids, Sampling(**settings))
    assert free.completion_tokens == 24 and free.finish_reason == "length"
    stop = next(free.text[i:i + 3] for i in range(4, len(free.text)) if free.text[i:i + 3].strip())
    cut = engine.complete(ids, Sampling(**settings, stop=[stop]))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(stop)]
    streamed = "".join(engine.stream(ids, Sampling(**settings, stop=[stop])))
    assert streamed == cut.text  # the held-back stop string never reaches a streaming client


def test_chat_keeps_history_and_resets(lora_run_dir):
    engine = Engine(load(str(lora_run_dir), device="cpu"))
    out = io.StringIO()
    chat.run(engine, Sampling(max_new_tokens=8), system="Be brief.",
             stdin=io.StringIO("Name 2 fruits.\nAnd 2 more.\n/reset\nName 2 fruits.\n/exit\n"), stdout=out)
    text = out.getvalue()
    answers = [line for line in text.splitlines() if line.startswith("assistant> ")]
    assert len(answers) == 3 and "(conversation reset)" in text
    # after /reset the same question gets the same answer as the first time (greedy, same history)
    assert answers[0] == answers[2]
    first = engine.complete(engine.encode(engine.render([{"role": "system", "content": "Be brief."},
                                                         {"role": "user", "content": "Name 2 fruits."}])),
                            Sampling(max_new_tokens=8))
    assert answers[0].startswith("assistant> " + first.text.rstrip()[:10])
