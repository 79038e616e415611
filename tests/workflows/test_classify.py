"""task: classify on a tiny BERT encoder and a tiny Llama decoder: training, the saved head, reload through
`weitiao eval`, class weights, and label errors. The real MiniLM run is in tests/integration/test_classify_demo.py."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import run_cli
from weitiao.config import load_config
from weitiao.errors import ConfigError, DataError
from weitiao.testing import save_tiny_encoder, write_intent_slice
from weitiao.workflows import classify


@pytest.fixture(scope="module")
def intent_dir(tmp_path_factory):
    return write_intent_slice(tmp_path_factory.mktemp("intent"))


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


def classify_config(path, model_dir, data_dir, out_dir, **sections):
    cfg = {
        "task": "classify",
        "model": {"name_or_path": str(model_dir)},
        "data": {"format": "labelled", "train": str(data_dir / "train.jsonl"), "val": str(data_dir / "val.jsonl"),
                 "test": str(data_dir / "test.jsonl"), "max_length": 64},
        "method": {"name": "lora", "lora": {"r": 4, "alpha": 8}},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "eval_steps": 8, "logging_steps": 2,
                  "precision": "fp32"},
        "eval": {"metrics": ["accuracy", "macro_f1"], "generation": {"batch_size": 16}},
        "output": {"dir": str(out_dir)},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("arch,method", [("bert", "lora"), ("llama", "full")])
def test_trains_saves_head_and_reloads(tmp_path, intent_dir, tiny_encoder_dir, tiny_model_dir, arch, method):
    model_dir = tiny_encoder_dir if arch == "bert" else tiny_model_dir
    cfg = classify_config(tmp_path / "c.yaml", model_dir, intent_dir, tmp_path / "run", method={"name": method})
    result = classify.run(load_config(cfg))
    m = result.metrics
    assert m["labels"] == ["account", "billing", "returns", "shipping", "technical"]
    assert m["train"]["precision"] == "fp32"  # as configured, recorded for bench/methods.py's table
    assert m["test"]["tuned"]["loss"] < m["test"]["base"]["loss"]
    confusion = json.loads((result.out_dir / "confusion_matrix.json").read_text())
    assert len(confusion["tuned"]) == 5 and sum(map(sum, confusion["tuned"])) == 20
    assert (result.out_dir / "confusion_matrix.png").stat().st_size > 0
    saved = result.out_dir / ("adapter" if method == "lora" else "model")
    if method == "lora":  # the new head is saved in full next to the LoRA matrices
        from safetensors.torch import load_file

        keys = load_file(str(saved / "adapter_model.safetensors")).keys()
        assert any("classifier" in k for k in keys) and any("lora_A" in k for k in keys)
    out = tmp_path / "eval.json"
    proc = run_cli("eval", result.out_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded = json.loads(out.read_text())
    assert reloaded["metrics"]["accuracy"] == m["test"]["tuned"]["accuracy"]
    assert reloaded["metrics"]["loss"] == pytest.approx(m["test"]["tuned"]["loss"], rel=1e-5)
    assert reloaded["confusion"] == confusion["tuned"]


def test_balanced_class_weights_are_applied(tmp_path, tiny_encoder_dir, intent_dir):
    rows = [json.loads(line) for line in (intent_dir / "train.jsonl").open()]
    skewed = [r for r in rows if r["label"] != "account"] + [r for r in rows if r["label"] == "account"][:2]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in skewed))
    for name in ("val", "test"):
        (data / f"{name}.jsonl").write_text((intent_dir / f"{name}.jsonl").read_text())
    cfg = classify_config(tmp_path / "c.yaml", tiny_encoder_dir, data, tmp_path / "run",
                          train={"class_weights": "balanced", "max_steps": 2})
    result = classify.run(load_config(cfg))
    counts = json.loads((result.out_dir / "data_report.json").read_text())["train_label_counts"]
    weights = dict(zip(result.metrics["labels"], result.metrics["train"]["class_weights"]))
    total = sum(counts.values())
    assert weights["account"] == pytest.approx(total / (5 * 2))
    assert weights["account"] > 5 * weights["billing"]


def test_unknown_label_in_test_names_the_row_and_writes_nothing(tmp_path, tiny_encoder_dir, intent_dir):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "val"):
        (data / f"{name}.jsonl").write_text((intent_dir / f"{name}.jsonl").read_text())
    (data / "test.jsonl").write_text('{"text": "hello", "label": "billing"}\n{"text": "where?", "label": "shiping"}\n')
    cfg = classify_config(tmp_path / "c.yaml", tiny_encoder_dir, data, tmp_path / "run")
    proc = run_cli("train", cfg)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "test.jsonl line 2" in proc.stderr and "'shiping'" in proc.stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="missing field 'label'"):
        (data / "test.jsonl").write_text('{"text": "no label here"}\n')
        classify.run(load_config(cfg))


def test_config_checks_for_classify(tmp_path, tiny_encoder_dir, intent_dir):
    with pytest.raises(ConfigError) as err:
        load_config(classify_config(tmp_path / "c.yaml", tiny_encoder_dir, intent_dir, tmp_path / "run",
                                    method={"name": "prefix"}, data={"format": "messages"},
                                    eval={"metrics": ["count_list"]}))
    text = str(err.value)
    assert "method.name" in text and "data.format" in text and "eval.metrics[0]" in text
    with pytest.raises(ConfigError, match="labelled rows are for task classify"):
        load_config(classify_config(tmp_path / "d.yaml", tiny_encoder_dir, intent_dir, tmp_path / "run",
                                    task="sft", eval={"metrics": []}))
