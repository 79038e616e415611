"""The real bundled SmolLM2-135M-Instruct in the README's test command: the shipped examples/quickstart.yaml,
shortened to 3 steps of 4 rows, 1 test row and answers of up to 64 tokens, end to end (its GGUF converted, its own
chat template, training, base and tuned scored, the report), and the adapter it saves answers like plain
transformers + peft. Left out: the forgetting check (4,000 tokens scored twice, half of this test's time on one
core), which tests/evaluation/test_report.py runs on the tiny model.

That the quickstart learns its task (count accuracy 0.28 -> 1.00 on the 80 test rows) is proved by the full run in
test_quickstart.py, marked slow: minutes of training that the README's test command leaves out (`pytest -m slow`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_the_quickstart_shortened_trains_the_bundled_model_and_its_adapter_answers_like_plain_peft(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = (REPO / "examples" / "data" / "count_list" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:1]
    (tmp_path / "test.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    proc = run_cli("train", REPO / "examples" / "quickstart.yaml", f"output.dir={out}", "train.max_steps=3",
                   "train.batch_size=4", f"data.test={tmp_path / 'test.jsonl'}", "data.val=[]",
                   "eval.generation.batch_size=1", "eval.generation.max_new_tokens=64",
                   "eval.forgetting=false",
                   timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "smollm2-135m-instruct" in proc.stdout and "report.html" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    print(f"3 steps: test loss {base['loss']:.4f} -> {tuned['loss']:.4f}; count_list {base['count_list']:.3f} -> "
          f"{tuned['count_list']:.3f}")
    assert metrics["train"]["steps"] == 3 and tuned["loss"] < base["loss"]  # 3 steps already move the answers' loss

    base_dir = json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                      out / "adapter").eval()
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 1
    for row in predictions:  # unbatched on both sides: the same greedy answer, token for token
        ids = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=64, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == row["tuned"]
