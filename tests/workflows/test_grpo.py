"""GRPO end to end on the tiny model (TRL's GRPOTrainer): rewards see each sampled answer with its own row's
reference, the logged reward curve is those rewards' mean, the run continues a finished SFT run like DPO does, and
a reward that cannot run or returns no number is one error before anything is trained or written. The demo on the
bundled model (count accuracy before and after): bench/grpo_demo.py, docs/guides/grpo.md."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO, run_cli, write_config
from weitiao.config import load_config
from weitiao.data.dataset import load_splits
from weitiao.workflows import grpo

# a user's reward module: records what it was given, and scores answers by their length modulo 3 so that the
# answers of a group differ in reward (a group whose rewards are all equal has no advantage to train on)
RECORDING_REWARD = '''
import json, os

def by_length(completion, reference):
    with open(os.environ["REWARD_LOG"], "a") as f:
        f.write(json.dumps({"completion": completion, "reference": reference}) + "\\n")
    return float(len(completion) % 3)

def says_yes(completion, reference):
    return "yes"

def right_for_the_reference_only(completion, reference):
    return 1.0 if completion == reference else "no"
'''


def grpo_config(tmp_path, model, data_dir, out, **sections):
    """conftest.write_config's tiny-model config as task grpo: 2 answers per question, 8 tokens each."""
    path = write_config(tmp_path / "grpo.yaml", model, data_dir, out, **sections)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = "grpo"
    cfg["grpo"] = {"num_generations": 2, "max_completion_length": 8, **cfg.get("grpo", {})}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(RECORDING_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("REWARD_LOG", str(tmp_path / "rewards.jsonl"))
    return tmp_path / "rewards.jsonl"


def test_rewards_score_each_answer_against_its_rows_reference(tmp_path, lora_run_dir, demo_data_dir, reward_module):
    """From the finished LoRA run: 3 steps of 4 answers (2 questions x 2). Every recorded (answer, reference)
    has a training row's reference, the curve's reward of each step is the mean of what the function returned
    for that step's answers, the adapter moves, and the run reads like an SFT run's (test split before/after,
    the starting run named)."""
    cfg = grpo_config(tmp_path, lora_run_dir, demo_data_dir, tmp_path / "run",
                      train={"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1},
                      grpo={"rewards": ["my_rewards:by_length"]})
    config = load_config(cfg)
    references = {ex.messages[-1][1] for ex in load_splits(config.data, config.base_dir).train}
    result = grpo.run(config)
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    probe, *recorded = [json.loads(line) for line in reward_module.read_text().splitlines()]
    print("curve", metrics["rewards"]["curve"])
    assert probe["completion"] == probe["reference"]  # before loading: the first row's reference, as an answer
    assert len(recorded) == 3 * 4 and {r["reference"] for r in recorded} <= references
    # the two answers of a question share its reference: TRL repeats each prompt num_generations times
    assert all(a["reference"] == b["reference"] for a, b in zip(recorded[::2], recorded[1::2]))
    for step, entry in enumerate(metrics["rewards"]["curve"]):
        returned = [len(r["completion"]) % 3 for r in recorded[4 * step: 4 * step + 4]]
        assert entry["step"] == step + 1 and entry["my_rewards:by_length"] == pytest.approx(sum(returned) / 4)
    assert metrics["task"] == "grpo" and metrics["train"]["steps"] == 3
    assert metrics["start"]["run"] == str(lora_run_dir) and metrics["test"]["base"] and metrics["test"]["tuned"]
    assert json.loads((result.out_dir / "run.json").read_text())["status"] == "finished"
    assert (result.out_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (result.out_dir / "predictions.jsonl").is_file()


def test_grpo_from_a_model_with_the_demo_rewards_and_rephrased_questions(tmp_path, tiny_model_dir, demo_data_dir):
    """From the tiny base model: the demo's rewards (a metric name each, weighted) and the test questions asked
    another way, scored before and after."""
    cfg = grpo_config(tmp_path, tiny_model_dir, demo_data_dir, tmp_path / "run",
                      train={"max_steps": 1, "batch_size": 4},
                      grpo={"rewards": ["count_list", "count_close"], "reward_weights": [1.0, 0.5]},
                      eval={"rephrase": True, "metrics": ["count_list"], "generation": {"max_new_tokens": 8}},
                      rephrase={"templates": str(REPO / "examples" / "rephrase" / "count_list_any_eval.yaml"), "k": 1})
    metrics = grpo.run(load_config(cfg)).metrics
    assert metrics["rewards"]["weights"] == [1.0, 0.5] and len(metrics["rewards"]["curve"]) == 1
    assert set(metrics["rewards"]["curve"][0]) >= {"reward", "count_list", "count_close", "reward_std"}
    assert metrics["rephrased"]["rows"] == 8 and set(metrics["rephrased"]["base"]) == {"loss", "perplexity",
                                                                                        "count_list"}
    assert metrics["start"]["run"] is None


def test_bad_rewards_are_one_error_before_anything_is_written(tmp_path, tiny_model_dir, demo_data_dir,
                                                                reward_module):
    from weitiao.errors import ConfigError

    out = tmp_path / "run"
    # every problem of the grpo section in one message, as `weitiao validate` reports them
    proc = run_cli("train", grpo_config(tmp_path, tiny_model_dir, demo_data_dir, out, grpo={
        "rewards": ["no_such_module:f", "my_rewards:nothing", "count_lst"], "reward_weights": [1, 2],
        "num_generations": 3}), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    for message in ("grpo.rewards[0]: reward function 'no_such_module:f': cannot import 'no_such_module'",
                    "grpo.rewards[1]: reward function 'my_rewards:nothing': 'my_rewards' has no function 'nothing'",
                    "grpo.rewards[2]: 'count_lst' is no metric (did you mean 'count_list'?)",
                    "is not a multiple of grpo.num_generations 3", "grpo.reward_weights: 2 weights for 3 rewards"):
        assert message in proc.stderr, proc.stderr
    with pytest.raises(ConfigError, match="grpo.rewards: name at least one reward"):
        load_config(grpo_config(tmp_path, tiny_model_dir, demo_data_dir, out, grpo={"rewards": []}))
    # a function that returns a string: found on the first training row, before the model loads
    proc = run_cli("train", grpo_config(tmp_path, tiny_model_dir, demo_data_dir, out,
                                        grpo={"rewards": ["my_rewards:says_yes"]}), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "grpo.rewards: my_rewards:says_yes returned 'yes' (str) for an answer to " in proc.stderr
    assert "train.jsonl line 1" in proc.stderr and "model:" not in proc.stdout
    assert not out.exists()
    # a function that passes the check on the reference but returns a string for a sampled answer: training
    # stops at its first batch, the run is marked failed, and the message names the reward and the row
    proc = run_cli("train", grpo_config(tmp_path, tiny_model_dir, demo_data_dir, out,
                                        grpo={"rewards": ["my_rewards:right_for_the_reference_only"]}), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "my_rewards:right_for_the_reference_only returned 'no' (str)" in proc.stderr
    assert "training stopped at step 0" in proc.stderr and "--resume" in proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
