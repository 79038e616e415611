"""`weitiao export`: a merged folder that plain transformers loads and that answers like the tuned run; refusals
leave nothing behind."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli, write_config
from weitiao.config import load_config
from weitiao.serving import export
from weitiao.workflows import sft


def _plain_answers(folder, rows):
    """Greedy answers of the exported folder through plain transformers only: its own chat template, its
    generation config (stop tokens), no weitiao code."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    answers = []
    for row in rows:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def test_lora_export_loads_with_plain_transformers_and_answers_like_the_run(lora_run_dir, tmp_path):
    out = tmp_path / "export"
    summary = export.run(str(lora_run_dir), str(out))
    assert summary["merged"] and summary["logit_check"]["max_total_variation"] < 1e-4
    assert summary["logit_check"]["top1_agreement"] == 1.0
    assert not (out / "adapter_config.json").exists()  # a dense model, not an adapter
    gen = json.loads((out / "generation_config.json").read_text())
    template = json.loads((lora_run_dir / "template.json").read_text())
    assert gen["eos_token_id"] == template["stop_ids"]
    rows = [json.loads(line) for line in (lora_run_dir / "predictions.jsonl").read_text().splitlines()]
    assert _plain_answers(out, rows) == [r["tuned"] for r in rows]
    # what a serving engine (vLLM, SGLang, TGI) reads from a model folder: the architecture, safetensors weights (no
    # pickle), the tokenizer with the run's chat template, and the stop ids above
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert (out / "chat_template.jinja").read_text() == (lora_run_dir / "chat_template.jinja").read_text()


def test_bf16_export_and_a_refusal_that_writes_nothing(lora_run_dir, tmp_path):
    out = tmp_path / "bf16"
    summary = export.run(str(lora_run_dir), str(out), dtype="bf16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert 0 < summary["logit_check"]["max_total_variation"] <= export.MAX_TV["bf16"]

    refused = tmp_path / "refused"
    proc = run_cli("export", lora_run_dir, "--out", refused, "--dtype", "bf16", "--tolerance", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "export refused" in proc.stderr and "max total variation" in proc.stderr
    assert not refused.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bf16"]

    proc = run_cli("export", lora_run_dir, "--out", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"  # untouched


def test_prefix_run_exports_the_adapter_with_a_note(prefix_run_dir, tmp_path):
    summary = export.run(str(prefix_run_dir), str(tmp_path / "prefix"))
    assert summary["merged"] is False and "cannot be merged" in summary["notes"][0]
    assert (tmp_path / "prefix" / "adapter_config.json").is_file()
    assert (tmp_path / "prefix" / "tokenizer.json").is_file()


def test_qlora_export_merges_into_a_dequantized_copy(tmp_path, tiny_model_dir, demo_data_dir):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       method={"name": "qlora", "qlora": {"bits": 4}, "lora": {"r": 4, "alpha": 8}},
                       train={"learning_rate": 1e-2})
    run_dir = sft.run(load_config(cfg)).out_dir
    summary = export.run(str(run_dir), str(tmp_path / "export"))
    assert any("de-quantized" in note for note in summary["notes"])
    assert summary["logit_check"]["max_total_variation"] < 1e-4
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert "quantization_config" not in model.config.to_dict()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_model_dir):
    with pytest.raises(Exception, match="not a weitiao run folder"):
        export.run(str(tiny_model_dir), str(tmp_path / "x"))


def test_a_full_disk_stops_the_export_with_one_message_and_nothing_written(lora_run_dir, tmp_path):
    """A real full disk (a tmpfs smaller than the merged model): one message, exit 2, no traceback, and neither
    the folder nor its temporary sibling left behind."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = run_cli("export", lora_run_dir, "--out", mount / "export")
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "is full" in proc.stderr and "nothing was written" in proc.stderr
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)])
