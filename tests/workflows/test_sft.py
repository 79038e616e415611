"""End to end on the tiny model: train, evaluate, reload with plain peft/transformers, overwrite and resume."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli, write_config
from weitiao.config import load_config
from weitiao.memory.measured import peak_memory
from weitiao.workflows import sft


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, demo_data_dir):
    tmp = tmp_path_factory.mktemp("lora-run")
    cfg_path = write_config(tmp / "c.yaml", tiny_model_dir, demo_data_dir, tmp / "run")
    result = sft.run(load_config(cfg_path))
    return cfg_path, result


def test_run_folder_describes_itself(lora_run):
    _, result = lora_run
    out = result.out_dir
    for name in ("config.yaml", "versions.json", "chat_template.jinja", "template.json", "trainer_state.json",
                 "metrics.json", "loss_curve.png", "predictions.jsonl", "data_report.json", "run.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert metrics["train"]["steps"] == 4
    assert [v["step"] for v in metrics["val"]] == [2, 4]
    assert set(metrics["test"]["base"]) == set(metrics["test"]["tuned"]) == {
        "loss", "perplexity", "count_list", "exact_match"}
    assert metrics["test"]["tuned"]["loss"] < metrics["test"]["base"]["loss"]  # 4 steps at lr 1e-3 do learn
    assert json.loads((out / "template.json").read_text())["eot"] == "<|im_end|>"
    assert json.loads((out / "versions.json").read_text())["torch"] == torch.__version__
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # throughput over the training steps alone (validation and checkpoints ran between them), and the peak
    # memory of training alone next to the whole run's
    t, data = metrics["train"], metrics["data"]
    assert 0 < t["step_seconds"] < t["runtime_s"]
    assert t["tokens_per_s"] == pytest.approx(data["train_tokens"] * t["epochs"] / t["step_seconds"], rel=0.02)
    assert 0 < metrics["memory"]["train_peak_rss_bytes"] <= metrics["memory"]["peak_rss_bytes"]


def test_adapter_reloads_with_plain_peft_and_gives_identical_logits(lora_run, tiny_model_dir, tiny_tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, result = lora_run
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, result.out_dir / "adapter").eval()
    ids = tiny_tokenizer("<|im_start|>user\nList 3 fruits.<|im_end|>\n<|im_start|>assistant\n",
                         return_tensors="pt", add_special_tokens=False)["input_ids"]
    result.model.eval()
    with torch.no_grad():
        expected = result.model(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits
    assert torch.equal(expected, got)


def test_eval_cli_matches_training_metrics_and_plain_peft_generations(lora_run, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, result = lora_run
    out_json = tmp_path / "eval.json"
    proc = run_cli("eval", result.out_dir, "--out", out_json)
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(out_json.read_text())
    tuned = json.loads((result.out_dir / "metrics.json").read_text())["test"]["tuned"]
    assert evaluated["metrics"] == tuned

    # The same prompts through plain transformers + peft, greedy, one at a time (no padding at all).
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                      result.out_dir / "adapter").eval()
    rows = [json.loads(line) for line in (result.out_dir / "predictions.jsonl").read_text().splitlines()]
    for row, prediction in zip(rows, evaluated["predictions"]):
        prompt = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=12, do_sample=False,
                                 eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert text == prediction == row["tuned"]


def test_finished_run_is_not_overwritten_without_flag(lora_run):
    cfg_path, result = lora_run
    before = (result.out_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    proc = run_cli("train", cfg_path)
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    assert (result.out_dir / "adapter" / "adapter_model.safetensors").read_bytes() == before


def test_unfinished_run_resumes_from_last_complete_checkpoint(tmp_path, tiny_model_dir, demo_data_dir):
    cfg_path = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                            eval={"metrics": [], "compare_base": False})
    first = sft.run(load_config(cfg_path))
    out = first.out_dir
    # Pretend the run was killed while writing its step-4 checkpoint: the folder exists, trainer_state.json not.
    (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    (out / "run.json").write_text(json.dumps({"status": "running"}))
    changed = run_cli("train", cfg_path, "train.learning_rate=0.5")
    assert changed.returncode == 2 and "different config (train.learning_rate)" in changed.stderr
    resumed = run_cli("train", cfg_path)  # no flag needed: an unfinished run resumes
    assert resumed.returncode == 0, resumed.stderr
    assert "removing" in resumed.stdout and "checkpoint-4: an incomplete checkpoint" in resumed.stdout
    assert "resuming from" in resumed.stdout and "checkpoint-2" in resumed.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # continued, not restarted
    resume_finished = run_cli("train", cfg_path, "--resume")
    assert resume_finished.returncode == 2 and "nothing to resume" in resume_finished.stderr
    again = run_cli("train", cfg_path, "--overwrite")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_full_and_freeze_save_a_plain_model_folder(tmp_path, tiny_model_dir, demo_data_dir, method):
    from transformers import AutoModelForCausalLM

    cfg_path = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                            method={"name": method, "freeze": {"last_layers": 1}},
                            eval={"metrics": ["count_list"], "generation": {"max_new_tokens": 4}})
    result = sft.run(load_config(cfg_path))
    reloaded = AutoModelForCausalLM.from_pretrained(result.out_dir / "model").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits)


def test_a_run_started_before_a_config_key_existed_still_resumes(tmp_path, tiny_model_dir, demo_data_dir):
    """Keys added to weitiao since the run started (absent from its config.yaml) count as their defaults."""
    import yaml

    from weitiao.config import dump_config, resolved
    from weitiao.errors import WeitiaoError
    from weitiao.runs import check_same_config

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run"))
    saved = yaml.safe_load(dump_config(resolved(cfg)))
    del saved["distributed"], saved["train"]["padding_free"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    check_same_config(cfg, tmp_path / "run")  # no error
    cfg.train.padding_free = False  # a real change from what the run used (the default) is still refused
    with pytest.raises(WeitiaoError, match="train.padding_free"):
        check_same_config(cfg, tmp_path / "run")


def test_the_whole_runs_peak_is_at_least_the_training_phases():
    """Two kernel counters, read at different times: ru_maxrss was once 184 KiB below the VmHWM read before it."""
    huge = {"train_peak_rss_bytes": 2**50}
    assert peak_memory("cpu", huge) == {"peak_rss_bytes": 2**50, **huge}
    assert 0 < peak_memory("cpu")["peak_rss_bytes"] < 2**50
