"""Bad input gives one clear message naming the file and the line, row or field; exit 2; no traceback; no output."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import run_cli, write_config


def assert_clean_failure(result, *needles, out_dir=None):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr
    if out_dir is not None:
        assert not out_dir.exists(), f"{out_dir} was left behind"


@pytest.fixture
def data_copy(tmp_path, demo_data_dir):
    folder = tmp_path / "data"
    shutil.copytree(demo_data_dir, folder)
    return folder


def test_broken_jsonl_line_names_file_and_line(tmp_path, tiny_model_dir, data_copy):
    train = data_copy / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[6] = lines[6][:-5]  # line 7 loses its closing braces
    train.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_copy, out)
    result = run_cli("train", cfg)
    assert_clean_failure(result, f"{train} line 7", "not valid JSON", out_dir=out)


def test_row_missing_output_field_names_row_and_field(tmp_path, tiny_model_dir):
    data = tmp_path / "alpaca.json"
    rows = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye"}]
    data.write_text(json.dumps(rows))
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path, out,
                       data={"format": "alpaca", "train": str(data), "val": [], "test": []})
    result = run_cli("train", cfg)
    assert_clean_failure(result, f"{data} row 1", "missing field 'output'", out_dir=out)


def test_unknown_data_format_is_a_config_error(tmp_path, tiny_model_dir, demo_data_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, out, data={"format": "sharegtp"})
    result = run_cli("train", cfg)
    assert_clean_failure(result, "data.format", "'sharegtp'", "did you mean 'sharegpt'", out_dir=out)


def test_misspelled_key_gets_did_you_mean_and_all_errors_reported(tmp_path, tiny_model_dir, demo_data_dir):
    out = tmp_path / "run"
    cfg_path = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, out)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["learning_rte"] = 1e-4
    cfg["method"]["lora"]["r"] = "sixteen"
    cfg_path.write_text(yaml.safe_dump(cfg))
    result = run_cli("train", cfg_path)
    assert_clean_failure(result, str(cfg_path), "train.learning_rte", "did you mean 'train.learning_rate'",
                         "method.lora.r: expected an integer", "2 problem(s)", out_dir=out)


def test_model_path_that_does_not_exist(tmp_path, demo_data_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "no-such-model", demo_data_dir, out)
    result = run_cli("train", cfg)
    assert_clean_failure(result, "model.name_or_path", "no-such-model", "does not exist", out_dir=out)


def test_unknown_override_key(tmp_path, tiny_model_dir, demo_data_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, out)
    result = run_cli("train", cfg, "train.max_stesp=3")
    assert_clean_failure(result, "train.max_stesp", "did you mean 'train.max_steps'", out_dir=out)


def test_validate_reports_bad_rows_without_writing(tmp_path, tiny_model_dir, data_copy):
    (data_copy / "val.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                         '{"role": "robot", "content": "x"}]}\n')
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, data_copy, tmp_path / "run")
    result = run_cli("validate", cfg)
    assert_clean_failure(result, f"{data_copy / 'val.jsonl'} line 1", "unknown role 'robot'",
                         out_dir=tmp_path / "run")


def test_validate_accepts_good_config(tmp_path, tiny_model_dir, demo_data_dir):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run")
    result = run_cli("validate", cfg)
    assert result.returncode == 0, result.stderr
    assert "train: 48 rows ok" in result.stdout
    assert not (tmp_path / "run").exists()


def test_help_everywhere():
    for args in ([], ["train"], ["eval"], ["validate"], ["config-reference"], ["data"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0
        assert "usage: weitiao" in result.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_asked_for_without_a_gpu(tmp_path, tiny_model_dir, demo_data_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, out)
    result = run_cli("train", cfg, "model.device=cuda")
    assert_clean_failure(result, "model.device: cuda", "use device auto or cpu", out_dir=out)
