"""Models and datasets by hub id, downloaded over real HTTP from a hub on loopback (tests/hub_server.py, through
HF_ENDPOINT; huggingface_hub and datasets are not mocked), then used again from the cache with the hub gone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from hub_server import Hub
from weitiao.testing import write_demo_slice


@pytest.fixture
def hub(tmp_path_factory, tiny_model_dir, monkeypatch):
    """A hub serving the tiny Llama (public and private copies) and a demo-data slice; the processes the test
    starts are online against it, with an empty cache."""
    data = write_demo_slice(tmp_path_factory.mktemp("hub-data"), train=24, val=4, test=4)
    served = Hub()
    served.add("models", "acme/tiny-llama", tiny_model_dir)
    served.add("models", "acme/private-llama", tiny_model_dir, private_token="hf_secret")
    served.add("datasets", "acme/count-list", data)
    served.start()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield served
    served.stop()


def hub_config(folder, out, **sections) -> str:
    cfg = {"model": {"name_or_path": "acme/tiny-llama"},
           "data": {"format": "messages", "train": ["acme/count-list"], "val": ["acme/count-list"],
                    "test": ["acme/count-list"], "max_length": 128},
           "method": {"name": "lora", "lora": {"r": 4, "alpha": 8}},
           "train": {"max_steps": 2, "batch_size": 4, "eval_steps": 2, "precision": "fp32"},
           "eval": {"metrics": ["count_list"], "generation": {"max_new_tokens": 8, "batch_size": 4}},
           "output": {"dir": str(out)}}
    for section, values in sections.items():
        cfg[section].update(values)
    path = folder / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_model_and_a_dataset_by_hub_id_train_and_train_again_from_the_cache_with_the_hub_gone(hub, tmp_path):
    first = run_cli("train", hub_config(tmp_path, tmp_path / "first"))
    assert first.returncode == 0, first.stderr[-3000:]
    sources = json.loads((tmp_path / "first" / "sources.json").read_text())
    model_commit, data_commit = hub.repos[("models", "acme/tiny-llama")].commit, \
        hub.repos[("datasets", "acme/count-list")].commit
    assert sources["model"]["kind"] == "hub" and sources["model"]["commit"] == model_commit
    assert sources["data"] == {"train": [f"acme/count-list@{data_commit}:train"],
                               "val": [f"acme/count-list@{data_commit}:validation"],
                               "test": [f"acme/count-list@{data_commit}:test"]}
    assert f"GET /acme/tiny-llama/resolve/{model_commit}/model.safetensors" in hub.requests
    report = json.loads((tmp_path / "first" / "data_report.json").read_text())
    assert (report["train_rows"], report["val_rows"], report["test_rows"]) == (24, 4, 4)

    hub.stop()  # the network is gone: the same config trains from the cache, to the same result
    again = run_cli("train", hub_config(tmp_path, tmp_path / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again" / "sources.json").read_text()) == sources
    assert (json.loads((tmp_path / "again" / "metrics.json").read_text())["test"]
            == json.loads((tmp_path / "first" / "metrics.json").read_text())["test"])


CASES = r"""
import json, os, sys
from weitiao.config import Config
from weitiao.data.dataset import load_splits
from weitiao.errors import WeitiaoError
from weitiao.models.loading import resolve_source

def attempt(what, call):
    try:
        call()
        print(json.dumps([what, "ok"]))
    except WeitiaoError as err:
        print(json.dumps([what, str(err)]))

data = Config().data
data.format = "messages"
attempt("private", lambda: resolve_source("acme/private-llama"))
attempt("revision", lambda: resolve_source("acme/tiny-llama", revision="v9"))
data.train, data.test = ["acme/no-such-set"], ["acme/count-list@v9"]
attempt("data", lambda: load_splits(data, "."))
data.train, data.test = ["acme/count-list"], ["acme/count-list:testing"]
attempt("split", lambda: load_splits(data, "."))
os.environ["HF_TOKEN"] = "hf_secret"
attempt("private with a token", lambda: resolve_source("acme/private-llama"))
from weitiao.memory.shape import load_config_dict  # `weitiao estimate owner/name`: the config only
print(json.dumps(["estimate", load_config_dict("acme/tiny-llama")["hidden_size"]]))
"""


def test_a_streamed_hub_dataset_is_read_from_the_hub_as_training_reads_it(hub, tmp_path, tmp_path_factory):
    """data.streaming with a hub dataset: nothing of it is downloaded to the cache beforehand; `datasets` reads
    the file over HTTP while training; the run records the commit."""
    corpus = tmp_path_factory.mktemp("corpus")
    (corpus / "train.jsonl").write_text((hub.repos[("datasets", "acme/count-list")].files["train.jsonl"]).read_text())
    hub.add("datasets", "acme/count-corpus", corpus)
    config = hub_config(tmp_path, tmp_path / "run", data={"train": ["acme/count-corpus"], "streaming": True,
                                                          "shuffle_buffer": 4})
    proc = run_cli("train", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commit = hub.repos[("datasets", "acme/count-corpus")].commit
    assert json.loads((tmp_path / "run" / "sources.json").read_text())["data"]["train"] == [
        f"acme/count-corpus@{commit}:train"]
    assert f"GET /datasets/acme/count-corpus/resolve/{commit}/train.jsonl" in hub.requests
    cache = Path(os.environ["HF_HOME"]) / "hub"
    assert not (cache / "datasets--acme--count-corpus").exists()  # streamed, not downloaded
    assert (cache / "datasets--acme--count-list").is_dir()  # val and test are read at once
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["streamed"]["train_rows"] == 8


def test_a_streamed_hub_dataset_with_the_hub_out_of_reach_is_one_clear_error(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    proc = run_cli("validate", hub_config(tmp_path, tmp_path / "run", data={"streaming": True}))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "data.train[0]: 'acme/count-list': the hub (http://127.0.0.1:9) cannot be reached to stream it" \
        in proc.stderr


def test_bad_hub_requests_get_one_clear_error_and_nothing_written(hub, tmp_path):
    """Through the CLI: one error line, exit 2, no traceback, no run folder. The other cases in one process (the
    same functions the CLI calls), over the same HTTP."""
    proc = run_cli("train", hub_config(tmp_path, tmp_path / "run", model={"name_or_path": "acme/no-such-model"}))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "model.name_or_path: 'acme/no-such-model' is not a model on the hub" in proc.stderr
    assert not (tmp_path / "run").exists()

    proc = subprocess.run([sys.executable, "-c", CASES], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = dict(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("["))
    assert "for a private repo log in (`hf auth login`) or set HF_TOKEN" in said["private"]
    assert "model.name_or_path: 'acme/tiny-llama': revision 'v9' does not exist" in said["revision"]
    assert "data.train[0]: 'acme/no-such-set' is not a dataset on the hub" in said["data"]
    assert "data.test[0]: 'acme/count-list': revision 'v9' does not exist" in said["data"]  # reported together
    assert 'acme/count-list: Unknown split "testing"' in said["split"], said["split"]
    assert said["private with a token"] == "ok"
    assert said["estimate"] == 64
    assert not any(r.startswith("GET /acme/tiny-llama/resolve/") and r.endswith(".safetensors") for r in hub.requests)
    assert any(r.startswith("GET /acme/private-llama/resolve/") for r in hub.requests)


def test_offline_a_hub_id_that_was_never_fetched_says_how_to_fetch_it(hub, tmp_path):
    """--offline with an empty cache: the hub is up, but nothing is asked of it. (A model id offline:
    tests/models/test_loading.py, as the whole suite runs offline.)"""
    proc = run_cli("--offline", "validate", hub_config(tmp_path, tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("data.train[0]: 'acme/count-list' is not in the local cache" in proc.stderr
            and "`hf download acme/count-list --repo-type dataset`" in proc.stderr), proc.stderr
    assert hub.requests == []


def test_a_model_from_modelscope_by_id(hub, tmp_path, monkeypatch):
    """`modelscope:OWNER/NAME` through ModelScope's own client, against the same loopback server's ModelScope
    endpoints (MODELSCOPE_ENDPOINT); an unknown id is one error."""
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope"))
    # the model and the data from ModelScope by id, the data as modelscope:OWNER/NAME[:split]
    config = hub_config(tmp_path, tmp_path / "run", model={"name_or_path": "modelscope:acme/tiny-llama"},
                        data={"format": "messages", "train": ["modelscope:acme/count-list"],
                              "val": ["modelscope:acme/count-list:validation"],
                              "test": ["modelscope:acme/count-list:test"], "max_length": 128})
    proc = run_cli("train", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sources = json.loads((tmp_path / "run" / "sources.json").read_text())
    assert sources["model"]["name_or_path"] == "modelscope:acme/tiny-llama" and sources["model"]["commit"] == "master"
    assert "GET /api/v1/models/acme/tiny-llama/repo" in hub.requests  # the weights came from the ModelScope route
    assert "GET /api/v1/datasets/acme/count-list/repo/tree" in hub.requests
    assert "modelscope:acme/count-list" in json.dumps(sources["data"])

    # an unknown dataset, and an unknown model: each one error
    config = hub_config(tmp_path, tmp_path / "ms-nodata", data={"format": "messages", "max_length": 128,
                                                                 "train": ["modelscope:acme/no-such-set"]})
    proc = run_cli("validate", config)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "modelscope:acme/no-such-set" in proc.stderr and "ModelScope could not provide it" in proc.stderr
    config = hub_config(tmp_path, tmp_path / "other", model={"name_or_path": "modelscope:acme/nope"})
    proc = run_cli("validate", config)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.name_or_path: 'modelscope:acme/nope': ModelScope could not provide it" in proc.stderr
