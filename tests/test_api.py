"""The Python API: the same pipeline, validation and results as the CLI, with exceptions instead of exit codes."""
from __future__ import annotations

import json

import pytest

import weitiao
from conftest import run_cli, write_config
from weitiao.errors import ConfigError, WeitiaoError


def test_train_in_python_gives_the_metrics_the_cli_writes(tmp_path, tiny_model_dir, demo_data_dir):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "cli",
                       train={"max_steps": 2, "eval_steps": 2})
    proc = run_cli("train", cfg)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())

    run = weitiao.train(cfg, output={"dir": str(tmp_path / "api")})  # a section as a keyword, as an override
    assert isinstance(run, weitiao.Run) and run.path == tmp_path / "api"
    assert run.metrics == json.loads((tmp_path / "api" / "metrics.json").read_text())
    assert run.metrics["test"]["rows"] == cli["test"]["rows"]
    for side in ("base", "tuned"):
        for name, value in cli["test"][side].items():
            assert run.metrics["test"][side][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (side, name)

    again = weitiao.load_run(run.path)
    assert again.metrics == run.metrics and again.config.train.max_steps == 2
    answer = again.chat("List 2 fruits.", max_tokens=8)
    assert isinstance(answer, str)
    scores = weitiao.evaluate(run.path, eval={"max_samples": 4})
    assert scores["rows"] == 4 and "loss" in scores["metrics"]


def test_bad_input_raises_the_cli_messages_as_exceptions(tmp_path, tiny_model_dir, demo_data_dir):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run")
    with pytest.raises(ConfigError) as err:  # every problem together, as `weitiao validate` reports them
        weitiao.train(cfg, train={"learning_rate": -1, "batch_size": 0})
    assert "train.learning_rate: must be positive" in str(err.value)
    assert "train.batch_size: must be at least 1" in str(err.value)
    with pytest.raises(WeitiaoError, match="not a weitiao run folder"):
        weitiao.load_run(tmp_path)
    assert not (tmp_path / "run").exists()
