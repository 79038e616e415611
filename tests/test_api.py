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


def test_export_in_python_writes_what_the_cli_writes(tmp_path, lora_run_dir):
    """Run.export: the merged folder the CLI's `weitiao export` writes, weight for weight, with the same check; an
    existing folder is refused unless overwrite=True; GGUF with its Modelfile as `--format gguf` writes it."""
    from safetensors.torch import load_file

    proc = run_cli("export", lora_run_dir, "--out", tmp_path / "cli")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = weitiao.load_run(lora_run_dir)
    out = run.export(tmp_path / "api")
    assert out == tmp_path / "api"
    cli, api = (load_file(tmp_path / side / "model.safetensors") for side in ("cli", "api"))
    assert cli.keys() == api.keys() and all((cli[k] == api[k]).all() for k in cli)
    summaries = [json.loads((tmp_path / side / "weitiao_export.json").read_text()) for side in ("cli", "api")]
    assert summaries[0]["logit_check"]["top1_agreement"] == summaries[1]["logit_check"]["top1_agreement"] == 1.0
    before = (tmp_path / "api" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(WeitiaoError, match="exists"):
        run.export(tmp_path / "api")
    assert (tmp_path / "api" / "model.safetensors").stat().st_mtime_ns == before  # nothing overwritten
    run.export(tmp_path / "api", overwrite=True)
    gguf = run.export(tmp_path / "gguf", format="gguf")
    summary = json.loads((gguf / "weitiao_export.json").read_text())
    assert summary["quant"] == "q8_0" and (gguf / summary["file"]).is_file()
    assert (gguf / "Modelfile").read_text().startswith(f"FROM ./{summary['file']}")
