"""Config loading: types, unknown keys with hints, every error together, overrides, the reference."""
from __future__ import annotations

from pathlib import Path

import pytest

from weitiao.config import config_from_dict, config_reference, load_config
from weitiao.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.problems


def test_defaults_and_types():
    cfg = config_from_dict({"data": {"train": "a.jsonl"}, "train": {"learning_rate": "2e-4"}})
    assert cfg.data.train == ["a.jsonl"]  # a single path becomes a list
    assert cfg.train.learning_rate == 2e-4  # YAML reads 2e-4 as a string
    assert cfg.method.name == "lora" and cfg.method.lora.target_modules == ["all-linear"]


def test_every_error_is_reported_with_its_path():
    found = problems({"modle": {}, "data": {"train": "a.jsonl", "fromat": "alpaca"},
                      "train": {"batch_size": "eight", "precision": "bf61"}, "method": {"lora": {"r": 1.5}}})
    assert "modle: unknown key in the top level (did you mean 'model'?)" in found
    assert "data.fromat: unknown key in section 'data' (did you mean 'data.format'?)" in found
    assert "train.batch_size: expected an integer, got 'eight'" in found
    assert any(p.startswith("train.precision: 'bf61' is not one of") and "did you mean 'bf16'" in p for p in found)
    assert "method.lora.r: expected an integer, got 1.5" in found
    assert len(found) == 5


def test_semantic_checks():
    found = problems({"data": {"train": [], "val_ratio": 0.6, "test_ratio": 0.5},
                      "eval": {"metrics": ["count_lst"]}, "model": {"chat_template": "chatmll"},
                      "train": {"lr_scheduler": "cosin", "optim": "adamw", "padding_free_multiple": 0}})
    text = "\n".join(found)
    assert "data.train: no training data given" in text
    assert "data.val_ratio + data.test_ratio" in text
    assert "eval.metrics[0]: unknown metric 'count_lst' (did you mean 'count_list'?)" in text
    assert "model.chat_template: unknown template 'chatmll' (did you mean 'chatml'?)" in text
    assert "train.lr_scheduler: unknown schedule 'cosin' (did you mean 'cosine'?)" in text
    assert "train.optim: unknown optimizer 'adamw'" in text
    assert "train.padding_free_multiple: must be at least 1, got 0" in text


def test_preference_task_checks():
    found = problems({"task": "dpo", "data": {"train": ["x"], "format": "messages"}, "method": {"name": "prefix"},
                      "preference": {"beta": 0, "loss_type": ["sigmod", "ipo"], "loss_weights": [1.0]},
                      "eval": {"reward_model": "no/such/run"}})
    text = "\n".join(found)
    assert "data.format: task dpo trains on chosen/rejected pairs: use format preference or sharegpt_preference" in text
    assert "method.name: task dpo supports full, freeze, lora, qlora, got 'prefix'" in text
    assert "preference.beta: must be positive" in text
    assert "preference.loss_type[0]: unknown dpo loss 'sigmod' (did you mean 'sigmoid'?)" in text
    assert "preference.loss_weights: 1 weights for 2 losses" in text
    assert "eval.reward_model: no/such/run is not a weitiao run folder" in text
    found = problems({"task": "reward", "data": {"train": ["x"], "format": "preference"}, "method": {"name": "qlora"}})
    assert found == ["method.name: task reward supports lora, full, got 'qlora'"]
    found = problems({"task": "kto", "data": {"train": ["x"], "format": "preference"},
                      "preference": {"loss_type": ["sigmoid"], "undesirable_weight": 0}})
    assert found == ["preference.loss_type[0]: unknown kto loss 'sigmoid'; known: kto, apo_zero_unpaired",
                     "preference.desirable_weight, undesirable_weight: must be positive"]


def test_overrides_and_relative_paths(tmp_path):
    path = tmp_path / "sub" / "c.yaml"
    path.parent.mkdir()
    path.write_text("data:\n  train: d/train.jsonl\ntrain:\n  epochs: 1\n")
    cfg = load_config(path, ["train.max_steps=7", "method.lora.target_modules=[q_proj, v_proj]",
                             "train.precision=bf16"])
    assert cfg.train.max_steps == 7 and cfg.train.precision == "bf16"
    assert cfg.method.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.base_dir == str(path.parent.resolve())


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train: [a\nmodel: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_reference_lists_every_field_and_the_docs_page_is_in_sync():
    ref = config_reference(markdown=True)
    for key in ("model.name_or_path", "data.loss_on", "method.lora.use_dora", "train.early_stopping_patience",
                "eval.generation.max_new_tokens", "output.overwrite"):
        assert f"`{key}`" in ref
    page = (REPO / "docs" / "reference" / "config.md").read_text()
    assert page.endswith(ref), "docs/reference/config.md is stale: run python scripts/docs.py"


def test_user_metric_that_cannot_be_imported_is_a_config_error():
    found = "\n".join(problems({"data": {"train": ["t.jsonl"]},
                                "eval": {"metrics": ["rouge-l", "no_such_module_xyz:score", "rouge:"]}}))
    assert "eval.metrics[1]: user metric 'no_such_module_xyz:score': cannot import" in found
    assert "eval.metrics[2]: user metric 'rouge:': a user metric is written module:function" in found
    assert "eval.metrics[0]" not in found
