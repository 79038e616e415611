"""`weitiao serve` as a real process on 127.0.0.1, spoken to with the official `openai` client."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import free_port

KEY = "test-key-123"


def _start(*args):
    port = free_port()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "weitiao", "serve", *map(str, args), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("server exited: " + proc.stdout.read()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not start in 120 s")


@pytest.fixture(scope="module")
def second_adapter(lora_run_dir, tmp_path_factory):
    """Another LoRA adapter of the same base: the run's adapter with every B matrix scaled by -50, so its answers
    clearly differ (two 4-step runs on the tiny model sample the same text too often to tell apart)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("second-adapter")
    shutil.copytree(lora_run_dir / "adapter", folder, dirs_exist_ok=True)
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v * -50 if "lora_B" in k else v for k, v in weights.items()}, folder / "adapter_model.safetensors")
    return folder


@pytest.fixture(scope="module")
def server(lora_run_dir, second_adapter):
    proc, port = _start(lora_run_dir, "--api-key", KEY, "--adapter", f"second={second_adapter}",
                        "--serve-base", "--max-tokens", "64", "--max-request-bytes", "20000")
    yield port, lora_run_dir.name
    proc.terminate()
    proc.wait(timeout=30)


def _client(port, key=KEY):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=60)


def _raw(port, path, body: bytes, key=KEY):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


ASK = [{"role": "user", "content": "Name 3 metals."}]


def test_models_chat_stream_and_completions(server):
    port, name = server
    client = _client(port)
    assert [m.id for m in client.models.list().data] == [name, "second", f"{name}:base"]
    reply = client.chat.completions.create(model=name, messages=ASK, max_tokens=16)
    text = reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=name, messages=ASK, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text and len(chunks) > 3
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    completion = client.completions.create(model=name, prompt="<|im_start|>user\nName 3 metals.<|im_end|>\n"
                                           "<|im_start|>assistant\n", max_tokens=16)
    assert completion.choices[0].text == text  # the chat template builds exactly this prompt


def test_each_served_name_is_its_own_model(server, lora_run_dir, second_adapter, tiny_model_dir):
    port, name = server
    client = _client(port)
    # seeded sampling: greedy answers of a 4-step tiny model are often one repeated token
    answers = [client.chat.completions.create(model=m, messages=ASK, max_tokens=16, temperature=1.0,
                                              seed=0).choices[0].message.content
               for m in (name, "second", f"{name}:base", name)]
    assert len(set(answers[:3])) == 3, answers  # three models
    assert answers[3] == answers[0]  # switching back restores the first adapter
    from peft import PeftModel

    from weitiao.serving.engine import Engine, Sampling
    from weitiao.serving.loaded import load

    alone = load(str(lora_run_dir), device="cpu")
    alone.model = PeftModel.from_pretrained(alone.model.unload(), str(second_adapter))
    engine = Engine(alone)
    again = engine.complete(engine.encode(engine.render(ASK)), Sampling(max_new_tokens=16, temperature=1.0, seed=0))
    assert again.text == answers[1]  # what is served as "second" is that adapter on the base


def test_auth_and_malformed_requests(server):
    port, name = server
    with pytest.raises(openai.AuthenticationError):
        _client(port, key="wrong").chat.completions.create(model=name, messages=ASK)
    status, body = _raw(port, "/v1/chat/completions", json.dumps({"messages": ASK}).encode(), key="")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    client = _client(port)
    with pytest.raises(openai.BadRequestError, match="max_tokens 65 is over"):
        client.chat.completions.create(model=name, messages=ASK, max_tokens=65)
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-4o", messages=ASK)
    with pytest.raises(openai.BadRequestError, match="end with a user message"):
        client.chat.completions.create(model=name, messages=ASK + [{"role": "assistant", "content": "x"}])
    for body in (b"{not json", b'{"messages": []}', b'{"messages": [{"role": "robot", "content": "x"}]}',
                 json.dumps({"messages": ASK, "temperature": 9}).encode()):
        status, reply = _raw(port, "/v1/chat/completions", body)
        assert status == 400 and reply["error"]["message"].startswith("invalid request"), (body, reply)
    status, reply = _raw(port, "/v1/chat/completions",
                         json.dumps({"messages": [{"role": "user", "content": "x" * 30000}]}).encode())
    assert status == 413


def test_twenty_concurrent_requests_all_succeed(server):
    port, name = server
    client = _client(port)

    def ask(k):
        messages = [{"role": "user", "content": f"Name {k % 9 + 1} fruits."}]
        if k % 2:
            return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model=name, messages=messages, max_tokens=12, stream=True) if c.choices)
        return client.chat.completions.create(model=name, messages=messages, max_tokens=12).choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert len(answers) == 20 and all(isinstance(a, str) for a in answers)
    assert answers[0] == answers[18]  # the same question gets the same (greedy) answer under load


def test_requests_beyond_the_limit_get_429(lora_run_dir):
    proc, port = _start(lora_run_dir, "--max-concurrent", "1", "--max-tokens", "400")
    try:
        client = _client(port, key="none")
        # min_tokens keeps the first request decoding for 400 tokens while the second arrives
        stream = client.chat.completions.create(model=lora_run_dir.name, messages=ASK, max_tokens=400, stream=True,
                                                extra_body={"min_tokens": 400})
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        with pytest.raises(openai.RateLimitError, match="server busy"):
            client.chat.completions.create(model=lora_run_dir.name, messages=ASK, max_tokens=4)
        rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert rest
        ok = client.chat.completions.create(model=lora_run_dir.name, messages=ASK, max_tokens=4)
        assert ok.choices[0].message.content is not None  # admitted again once the first finished
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_admission_slots_are_released_once_even_from_an_unstarted_stream():
    import gc
    import weakref

    from weitiao.serving.server import ApiError, _Slots

    slots = _Slots(2)
    first, second = slots.take(), slots.take()
    with pytest.raises(ApiError) as err:
        slots.take()
    assert err.value.status == 429
    first()
    first()  # idempotent: a second release does not free a slot that is in use
    assert slots.used == 1

    def events():
        try:
            yield "data: x\n\n"
        finally:
            second()

    stream = events()  # a client that disconnects before the first chunk: the generator never starts
    weakref.finalize(stream, second)
    del stream
    gc.collect()
    assert slots.used == 0


def test_rephrase_model_can_be_an_openai_compatible_endpoint(server, tiny_model_dir, demo_data_dir, tmp_path,
                                                              monkeypatch):
    """`rephrase.model: http://HOST/v1` asks the served model over HTTP (here `weitiao serve` on loopback, with its
    API key from the environment); every sample goes through the same checks and cache as a local model's."""
    from conftest import write_config
    from weitiao.config import load_config
    from weitiao.data.dataset import load_splits
    from weitiao.errors import WeitiaoError
    from weitiao.evaluation.rephrase import last_question
    from weitiao.evaluation.rephraser import clean_answer, endpoint_rephraser, read_cache, rephrasings_for

    port, name = server
    monkeypatch.setenv("WEITIAO_TEST_KEY", KEY)
    cache = tmp_path / "rephrase.jsonl"
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run", rephrase={
        "model": f"http://127.0.0.1:{port}/v1", "endpoint_model": name, "api_key_env": "WEITIAO_TEST_KEY",
        "k": 1, "cache": str(cache)}))
    test = load_splits(cfg.data, cfg.base_dir).test[:4]
    logs: list[str] = []
    found = rephrasings_for(cfg, test, logs.append)
    assert any(f"asking {name} at http://127.0.0.1:{port}/v1" in line for line in logs), logs
    entries = read_cache(cache)
    assert len(entries) == len({last_question(ex) for ex in test})  # every distinct text asked, and cached
    asked = sum(len(e["rephrasings"]) + sum(e["rejected"].values()) for e in entries.values())
    assert asked >= len(entries)  # at least one sample per text went through the checks

    # a sample is the served model's answer to the same request: the openai client, same prompt and seed
    rephraser = endpoint_rephraser(cfg, None)
    text = last_question(test[0])
    mine = rephraser.sample([text], seed=7)
    reply = _client(port).chat.completions.create(
        model=name, messages=[{"role": "user", "content": rephraser.prompt_for(text)}], temperature=0.9,
        top_p=0.95, max_tokens=rephraser.max_new_tokens, seed=7)
    assert mine == [clean_answer(reply.choices[0].message.content)]
    assert rephraser.prompt_for("请列出5种水果。").startswith("用不同的措辞改写")  # asked in the question's language

    monkeypatch.setenv("WEITIAO_TEST_KEY", "wrong")
    with pytest.raises(WeitiaoError, match="HTTP 401"):
        endpoint_rephraser(cfg, None).sample([text], seed=7)
