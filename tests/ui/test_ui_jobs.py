"""The UI's jobs and API over real HTTP (the UI as its own process): a run started from the CLI shows up, a run is
stopped with a checkpoint and resumed, a run is exported, bad requests get one clear message, and a login is
asked for when set."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, run_cli, write_config


def call(url: str, path: str, body=None, auth: str | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as err:
        text, status = err.read().decode(), err.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def start(root, *extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "weitiao", "ui", "--root", str(root), "--port", str(port),
                                *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/static/ui.css", timeout=1)
            return process, url
        except urllib.error.HTTPError:
            return process, url  # answering (a login is asked for)
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("the UI did not start")


def served_models(base_url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=5) as response:
            return [m["id"] for m in json.loads(response.read())["data"]]
    except OSError:
        return None


def wait_for(check, seconds: float = 300):
    end = time.time() + seconds
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail("timed out")


def test_stop_saves_a_checkpoint_resume_finishes_and_a_cli_run_shows_up(tmp_path, tiny_model_dir, demo_data_dir):
    root = tmp_path / "runs"
    cli_run = run_cli("train", write_config(tmp_path / "cli.yaml", tiny_model_dir, demo_data_dir, root / "from-cli"))
    assert cli_run.returncode == 0, cli_run.stderr[-2000:]
    process, url = start(root)
    try:
        status, page = call(url, "/runs")
        assert status == 200 and 'data-run="from-cli" data-status="finished"' in page

        form = {"name": "long", "model": str(tiny_model_dir), "train": str(demo_data_dir / "train.jsonl"),
                "val": "", "test": "", "max_steps": "600", "batch_size": "2",
                "eval_steps": "1000", "max_length": "128", "metrics": "count_list"}
        status, launched = call(url, "/api/launch", form)
        assert status == 200 and launched["started"], launched
        status, again = call(url, "/api/launch", form)  # a second click: the same job, not a second run
        assert status == 200 and not again["started"] and again["job"]["id"] == launched["job"]["id"]
        wait_for(lambda: (root / "long" / "logs").is_dir() and call(url, "/api/run?name=long")[1]["run"]["status"]
                 == "running")
        process.terminate()  # the UI restarts: the run goes on, and the new UI finds its job and stops it
        process.wait(timeout=20)
        process, url = start(root)
        assert [j["running"] for j in call(url, "/api/run?name=long")[1]["jobs"]] == [True]
        time.sleep(1)  # some steps into training
        status, stopped = call(url, "/api/stop?name=long", {})
        assert status == 200, stopped
        wait_for(lambda: not any(j["running"] for j in call(url, "/api/run?name=long")[1]["jobs"]))
        state = json.loads((root / "long" / "run.json").read_text())
        assert state["status"] == "interrupted" and 0 < state["step"] < 600
        assert list((root / "long" / "checkpoints").glob(f"checkpoint-{state['step']}"))

        status, resumed = call(url, "/api/resume?name=long", {})
        assert status == 200 and resumed["started"], resumed
        wait_for(lambda: json.loads((root / "long" / "run.json").read_text())["status"] == "finished")
        log = Path(resumed["job"]["log"]).read_text()
        assert f"resuming from {root / 'long' / 'checkpoints' / ('checkpoint-' + str(state['step']))}" in log
        assert json.loads((root / "long" / "metrics.json").read_text())["train"]["steps"] == 600

        # a preference pair between two runs: each answers with its own template, in random order
        status, pair = call(url, "/api/pair", {"name": "long", "mode": "runs", "other": "from-cli",
                                               "prompt": "Name 3 fruits."})
        assert status == 200, pair
        status, chosen = call(url, "/api/prefer", {"name": "long", "id": pair["id"], "choice": "tie"})
        assert status == 200 and sorted(chosen["sources"].values()) == ["from-cli", "long"]
        status, again = call(url, "/api/prefer", {"name": "long", "id": pair["id"], "choice": "A"})
        assert status == 400 and "already answered" in again["error"]

        status, exported = call(url, "/api/export", {"name": "long", "format": "hf"})
        assert status == 200, exported
        wait_for(lambda: not any(j["running"] for j in call(url, "/api/run?name=long")[1]["jobs"]))
        assert (root / "exports" / "long-hf" / "config.json").is_file()

        # Serve: `weitiao serve` as a job, answering the OpenAI API at the URL the page shows; Stop ends it
        status, answer = call(url, "/api/serve", {"name": "long", "port": "eighty"})
        assert status == 400 and answer["error"] == "port: 'eighty' is not a whole number"
        status, answer = call(url, "/api/chat", {"name": "long", "prompt": "hi", "max_tokens": 0})
        assert status == 400 and answer["error"] == "max_tokens: 0 is outside 1..4096"
        status, served = call(url, "/api/serve", {"name": "long", "port": free_port()})
        assert status == 200, served
        models = wait_for(lambda: served_models(served["url"]), 120)
        assert models == ["long"]
        job = next(j for j in call(url, "/api/run?name=long")[1]["jobs"] if j["kind"] == "serve")
        os.killpg(job["pid"], signal.SIGINT)
        wait_for(lambda: not any(j["running"] for j in call(url, "/api/run?name=long")[1]["jobs"]))
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_bad_requests_get_one_clear_message_and_a_login_is_asked_for(tmp_path, tiny_model_dir):
    process, url = start(tmp_path / "runs", "--auth", "ada:secret")
    try:
        status, _ = call(url, "/runs")
        assert status == 401
        status, page = call(url, "/runs", auth="ada:secret")
        assert status == 200 and "no runs yet" in page
        status, answer = call(url, "/api/launch", {"name": "x", "model": str(tiny_model_dir), "train": "",
                                                   "format": "nope", "batch_size": "many"}, auth="ada:secret")
        assert status == 400
        assert "data.format: 'nope' is not one of 'alpaca'" in answer["error"]  # every problem at once
        assert "train.batch_size: 'many' is not a number" in answer["error"]
        status, answer = call(url, "/api/launch", {"name": "x", "model": str(tiny_model_dir), "train": "",
                                                   "task": "grpo", "rewards": "count_lst"}, auth="ada:secret")
        assert status == 400 and "grpo.rewards[0]: 'count_lst' is no metric (did you mean 'count_list'?)" in \
            answer["error"]
        status, answer = call(url, "/api/run?name=../../etc", auth="ada:secret")
        assert status == 400 and "not under" in answer["error"]
        status, answer = call(url, "/api/upload", {"name": "../evil.jsonl", "text": "{}"}, auth="ada:secret")
        assert status == 400 and "upload: '../evil.jsonl' must be" in answer["error"]
        status, answer = call(url, "/api/prefer", {"name": "x", "id": "nope", "choice": "A"}, auth="ada:secret")
        assert status == 400 and "pair: unknown or already answered" in answer["error"]
        assert not (tmp_path / "runs" / "x").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)
