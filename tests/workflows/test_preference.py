"""DPO and reward models end to end on the tiny model: from an SFT run folder, from a base model, full and LoRA."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import run_cli, write_config
from weitiao.config import load_config
from weitiao.data.encode import encode_pair
from weitiao.data.formats import to_example
from weitiao.data.readers import Row
from weitiao.evaluation.preference import length_normalised_rewards
from weitiao.testing import write_preference_slice
from weitiao.workflows import dpo, reward

BETA = 0.1  # preference.beta's default


@pytest.fixture(scope="module")
def pref_data_dir(tmp_path_factory):
    return write_preference_slice(tmp_path_factory.mktemp("pref-data"), test=16)


def pref_config(tmp_path, model, data_dir, out, task="dpo", **sections):
    """The tiny-model config of conftest.write_config, as a preference task on the demo pairs."""
    path = write_config(tmp_path / f"{task}.yaml", model, data_dir, out, **sections)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = task
    cfg["data"]["format"] = "preference"
    path.write_text(yaml.safe_dump(cfg))
    return path


def policy_margins(model, pairs, pad_id):
    """Sum log p(chosen) - sum log p(rejected) of each pair under `model` (what DPO raises relative to ref)."""
    def logp(prompt, answer):
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lp[len(prompt) - 1:].sum())

    return [logp(p.prompt_ids, p.chosen_ids) - logp(p.prompt_ids, p.rejected_ids) for p in pairs]


def test_pair_ids_are_the_sft_prompt_and_answer_ids(tiny_tokenizer):
    """The prompt of a pair tokenizes exactly as the generation prompt; each answer ends with the eot token."""
    from weitiao.data.templates import resolve_template

    template = resolve_template(tiny_tokenizer, "auto")
    ex = to_example(Row({"prompt": "List 2 fruits.", "chosen": "1. Apple\n2. Pear", "rejected": "Apple"}, "x"),
                    "preference", {}, None)
    pair = encode_pair(ex, template, tiny_tokenizer)
    prompt = template.render(tiny_tokenizer, [{"role": "user", "content": "List 2 fruits."}],
                             add_generation_prompt=True)
    assert pair.prompt_ids == tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert pair.chosen_ids[-1] == pair.rejected_ids[-1] == template.eot_id
    assert tiny_tokenizer.decode(pair.rejected_ids) == "Apple" + template.eot


@pytest.fixture(scope="module")
def dpo_from_sft_run(tmp_path_factory, lora_run_dir, pref_data_dir):
    tmp = tmp_path_factory.mktemp("dpo-run")
    cfg = pref_config(tmp, lora_run_dir, pref_data_dir, tmp / "run",
                      train={"max_steps": 12, "learning_rate": 2e-2, "eval_steps": 6})
    return dpo.run(load_config(cfg))


def test_dpo_from_an_sft_run_prefers_chosen_answers_on_held_out_pairs(dpo_from_sft_run, lora_run_dir):
    out = dpo_from_sft_run.out_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["start"]["adapter"] == str(lora_run_dir / "adapter")
    held = metrics["preference"]
    print("held-out", held)
    assert held["split"] == "test" and held["pairs"] == 16
    assert held["reward_margin"] > 0 and held["reward_accuracy"] >= 0.75
    assert [v["step"] for v in metrics["val"]] == [6, 12]
    assert set(metrics["test"]["base"]) == set(metrics["test"]["tuned"]) == {"loss", "perplexity", "count_list",
                                                                              "exact_match"}
    # the run folder looks like an SFT run's: the trained adapter alone (not TRL's frozen "ref" copy)
    assert sorted(p.name for p in (out / "adapter").iterdir() if p.is_dir()) == []
    assert json.loads((out / "template.json").read_text()) == json.loads((lora_run_dir / "template.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"prompt", "reference", "rejected", "base", "tuned"} <= set(rows[0])


def test_dpo_raises_the_policy_margin_over_its_start(dpo_from_sft_run, lora_run_dir, pref_data_dir):
    """What DPO optimises, measured outside TRL: log p(chosen) - log p(rejected) on held-out pairs rises from the
    SFT adapter to the DPO adapter (both loaded with plain peft)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from weitiao.data.dataset import encode_pair_split, load_splits
    from weitiao.models.resolve import find_model

    cfg = load_config(dpo_from_sft_run.out_dir / "config.yaml")
    _, folder, tokenizer, template = find_model(cfg)
    pairs = encode_pair_split(load_splits(cfg.data, cfg.base_dir).test, template, tokenizer, cfg.data, "test", {})
    margins = {}
    for name, adapter in (("start", lora_run_dir / "adapter"), ("dpo", dpo_from_sft_run.out_dir / "adapter")):
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        margins[name] = policy_margins(PeftModel.from_pretrained(base, adapter).eval(), pairs,
                                       tokenizer.pad_token_id)
    gains = [d - s for s, d in zip(margins["start"], margins["dpo"])]
    print("margin gains", [round(g, 3) for g in gains])
    assert sum(g > 0 for g in gains) >= 0.75 * len(gains) and sum(gains) > 0


def test_a_dpo_run_is_served_evaluated_and_continued_like_an_sft_run(dpo_from_sft_run, tmp_path, pref_data_dir):
    from weitiao.serving.engine import Engine, Sampling
    from weitiao.serving.loaded import load

    out = dpo_from_sft_run.out_dir
    loaded = load(str(out), log=lambda *a: None)
    assert loaded.method == "lora" and loaded.adapters == {out.name: "default"}
    engine = Engine(loaded)
    finished = engine.complete(engine.encode(engine.render([{"role": "user", "content": "List 2 fruits."}])),
                               Sampling(max_new_tokens=5))
    assert finished.completion_tokens >= 1
    report = tmp_path / "eval.json"
    proc = run_cli("eval", out, "--out", report)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tuned = json.loads((out / "metrics.json").read_text())["test"]["tuned"]
    assert json.loads(report.read_text())["metrics"]["loss"] == pytest.approx(tuned["loss"], abs=1e-4)
    # a second DPO stage starts from the first (a chain of runs resolves to the same base)
    cfg = pref_config(tmp_path, out, pref_data_dir, tmp_path / "again", train={"max_steps": 1},
                      eval={"compare_base": False, "metrics": []})
    again = dpo.run(load_config(cfg))
    assert json.loads((again.out_dir / "metrics.json").read_text())["start"]["run"] == str(out)


@pytest.mark.parametrize("method,loss", [("lora", ["ipo"]), ("full", ["sigmoid", "sft"]), ("qlora", ["sigmoid"])])
def test_dpo_from_a_base_model_with_other_methods_and_losses(tmp_path, tiny_model_dir, pref_data_dir, method, loss):
    cfg = pref_config(tmp_path, tiny_model_dir, pref_data_dir, tmp_path / "run", method={"name": method},
                      preference={"loss_type": loss, "loss_weights": [1.0] * len(loss)},
                      train={"max_steps": 3, "eval_steps": 0}, eval={"metrics": ["count_list"]})
    result = dpo.run(load_config(cfg))
    adapter = method in ("lora", "qlora")
    saved = result.out_dir / ("adapter" if adapter else "model")
    assert (saved / ("adapter_model.safetensors" if adapter else "model.safetensors")).is_file()
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and metrics["preference"]["pairs"] == 16
    assert metrics["start"]["run"] is None


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, tiny_model_dir, pref_data_dir):
    tmp = tmp_path_factory.mktemp("reward-run")
    cfg = pref_config(tmp, tiny_model_dir, pref_data_dir, tmp / "rm", task="reward",
                      train={"max_steps": 12, "learning_rate": 1e-2, "eval_steps": 6})
    return reward.run(load_config(cfg))


def test_reward_model_learns_to_rank_the_pairs(reward_run):
    result = reward_run
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    print("reward base", base, "tuned", tuned)
    assert tuned["accuracy"] >= 0.75 and tuned["margin"] > base["margin"]
    # the saved adapter (LoRA + the trained one-output head) scores the pairs the same after a plain reload
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from weitiao.data.dataset import encode_pair_split, load_splits
    from weitiao.evaluation.reward import pairwise
    from weitiao.models.resolve import find_model

    loaded_cfg = load_config(result.out_dir / "config.yaml")
    _, folder, tokenizer, template = find_model(loaded_cfg)
    pairs = encode_pair_split(load_splits(loaded_cfg.data, loaded_cfg.base_dir).test, template, tokenizer,
                              loaded_cfg.data, "test", {})
    head = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    head.config.pad_token_id = tokenizer.pad_token_id
    again = pairwise(PeftModel.from_pretrained(head, result.out_dir / "adapter"), pairs, tokenizer.pad_token_id)
    assert again["accuracy"] == tuned["accuracy"]
    assert again["margin"] == pytest.approx(tuned["margin"], abs=1e-4)


def test_preference_config_and_start_errors(tmp_path, demo_data_dir, pref_data_dir, lora_run_dir, prefix_run_dir):
    # SFT does not start from a run folder: the error says how to make a model folder from it
    cfg = write_config(tmp_path / "sft.yaml", lora_run_dir, demo_data_dir, tmp_path / "x")
    proc = run_cli("train", cfg)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "is a weitiao run folder" in proc.stderr and "weitiao export" in proc.stderr
    # DPO cannot continue a prefix-tuning run; full fine-tuning cannot continue a LoRA adapter
    for start, method, message in ((prefix_run_dir, "lora", "which DPO, KTO and GRPO cannot train further"),
                                   (lora_run_dir, "full", "continue it with method lora or qlora")):
        cfg = pref_config(tmp_path, start, pref_data_dir, tmp_path / "y", method={"name": method})
        proc = run_cli("train", cfg)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "y").exists()


def test_eval_scores_generations_with_a_reward_model(reward_run, lora_run_dir, tmp_path):
    """`eval.reward_model` adds the mean reward of the generated answers, and each row's reward, to `weitiao eval`;
    the rewards equal the reward model's scores of the same conversations computed directly."""
    from weitiao.data.dataset import load_splits
    from weitiao.evaluation.reward import RewardScorer

    report = tmp_path / "eval.json"
    proc = run_cli("eval", lora_run_dir, f"eval.reward_model={reward_run.out_dir}", "--out", report)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(report.read_text())
    assert "reward" in result["metrics"] and "reward" in proc.stdout
    cfg = load_config(lora_run_dir / "config.yaml")
    examples = load_splits(cfg.data, cfg.base_dir).test
    direct = RewardScorer.of(str(reward_run.out_dir), "cpu").score(examples, result["predictions"])
    assert result["metrics"]["reward"] == pytest.approx(sum(direct) / len(direct), abs=1e-4)
    # a config naming something that is not a reward run is refused before anything loads
    proc = run_cli("eval", lora_run_dir, f"eval.reward_model={lora_run_dir}")
    assert proc.returncode == 2 and "is not a `task: reward` run" in proc.stderr


def test_grpo_rewarded_by_a_reward_model_run(reward_run, tiny_model_dir, demo_data_dir, tmp_path):
    """A `task: reward` run as a GRPO reward: TRL's reward function for it gives each sampled answer (TRL's
    conversational completion) the reward model's score of its own row's conversation, and a one-step run logs
    that reward's mean."""
    from weitiao.data.dataset import load_splits
    from weitiao.evaluation.reward import RewardScorer
    from weitiao.training.grpo import resolve_rewards, reward_functions
    from weitiao.workflows import grpo

    name = str(reward_run.out_dir)
    cfg = write_config(tmp_path / "grpo.yaml", tiny_model_dir, demo_data_dir, tmp_path / "grpo",
                       train={"max_steps": 1, "batch_size": 4}, eval={"compare_base": False, "metrics": []})
    data = yaml.safe_load(cfg.read_text())
    data.update(task="grpo", grpo={"rewards": [name], "num_generations": 2, "max_completion_length": 8})
    cfg.write_text(yaml.safe_dump(data))
    config = load_config(cfg)
    rows = load_splits(config.data, config.base_dir).train
    answers = ["1. Apple\n2. Pear", "a different answer"]
    (func,) = reward_functions(resolve_rewards([name], [], "cpu"), rows)
    got = func(prompts=None, completions=[[{"role": "assistant", "content": f" {a} "}] for a in answers], row=[3, 0])
    assert got == pytest.approx(RewardScorer.of(name, "cpu").score([rows[3], rows[0]], answers))
    curve = grpo.run(config).metrics["rewards"]["curve"]
    assert len(curve) == 1 and curve[0][name] == pytest.approx(curve[0]["reward"]) and curve[0][name] != 0


def test_implicit_rewards_match_trl_dpo_evaluation(dpo_from_sft_run, tmp_path):
    """weitiao's held-out reward accuracy/margin (computed for DPO and KTO alike) equals what TRL's DPOTrainer
    computes on the same pairs, for the trained policy against the SFT adapter it started from."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from weitiao.data.dataset import encode_pair_split, load_splits
    from weitiao.evaluation.preference import implicit_rewards
    from weitiao.training.preference import TokenizedDPOTrainer, pair_dataset
    from weitiao.models.resolve import find_model

    out = dpo_from_sft_run.out_dir
    cfg = load_config(out / "config.yaml")
    _, folder, tokenizer, template = find_model(cfg)
    pairs = encode_pair_split(load_splits(cfg.data, cfg.base_dir).test, template, tokenizer, cfg.data, "test", {})
    start_adapter = json.loads((out / "metrics.json").read_text())["start"]["adapter"]

    def merged(adapter):  # plain models: the policy (DPO adapter) and its reference (the SFT adapter it started at)
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()

    policy, reference = merged(out / "adapter"), merged(start_adapter)
    ours = implicit_rewards(policy, pairs, BETA, tokenizer.pad_token_id, ref_model=reference)
    trainer = TokenizedDPOTrainer(model=policy, ref_model=reference, args=DPOConfig(output_dir=str(tmp_path), report_to="none",
                                                              use_cpu=True, max_length=None, bf16=False,
                                                              per_device_eval_batch_size=len(pairs)),
                                  processing_class=tokenizer, train_dataset=pair_dataset(pairs))
    theirs = trainer.evaluate(eval_dataset=pair_dataset(pairs))
    print("weitiao", ours, "TRL", {k: v for k, v in theirs.items() if "rewards" in k})
    assert ours["reward_accuracy"] == pytest.approx(theirs["eval_rewards/accuracies"], abs=1e-6)
    assert ours["reward_margin"] == pytest.approx(theirs["eval_rewards/margins"], abs=1e-4)
    assert ours["chosen_reward"] == pytest.approx(theirs["eval_rewards/chosen"], abs=1e-4)


def test_kto_on_the_pairs_taken_apart(tmp_path, lora_run_dir, pref_data_dir):
    cfg = pref_config(tmp_path, lora_run_dir, pref_data_dir, tmp_path / "kto", task="kto",
                      train={"max_steps": 12, "learning_rate": 2e-2, "eval_steps": 6},
                      eval={"compare_base": False, "metrics": []})
    result = dpo.run(load_config(cfg))
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    print("kto held-out", metrics["preference"])
    assert metrics["task"] == "kto" and metrics["train"]["loss"] == ["kto"]
    assert metrics["preference"]["reward_margin"] > 0 and metrics["preference"]["reward_accuracy"] >= 0.75
    # 48 pairs became 96 rows, of which 12 steps of 4 rows took half
    assert metrics["train"]["steps"] == 12 and metrics["train"]["epochs"] == 0.5


@pytest.mark.parametrize("task", ["orpo", "simpo"])
def test_orpo_and_simpo_learn_the_pairs_without_a_reference(task, tmp_path, lora_run_dir, pref_data_dir):
    """TRL's ORPOTrainer and CPOTrainer (SimPO loss) on weitiao's tokenized pairs, from the LoRA run: no reference
    adapter or model is made, and the held-out pairs' length-normalised reward prefers the chosen answers."""
    cfg = pref_config(tmp_path, lora_run_dir, pref_data_dir, tmp_path / task, task=task,
                      train={"max_steps": 12, "learning_rate": 2e-2, "eval_steps": 6},
                      eval={"compare_base": False, "metrics": []},
                      preference={"beta": 1.0 if task == "orpo" else 2.0})  # ORPO's lambda; SimPO's paper beta
    config = load_config(cfg)
    from weitiao.workflows.dpo import load, prepare

    prepared = prepare(config, "cpu")
    before = length_normalised_rewards(load(config, prepared).model, prepared.encoded["test"],
                                       config.preference.beta, prepared.tokenizer.pad_token_id)
    result = dpo.run(config)
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    print(task, "held-out before", before, "after", metrics["preference"])
    assert metrics["preference_start"] == {"split": "test", **before}  # the run measures the start itself
    assert metrics["task"] == task and metrics["train"]["loss"] == [task] and metrics["train"]["steps"] == 12
    assert "ref" not in result.model.peft_config  # no frozen copy of the adapter: these losses have no reference
    assert metrics["preference"]["reward_margin"] > 1.3 * before["reward_margin"] > 0  # measured: x1.44, x1.49
    assert metrics["preference"]["reward_accuracy"] >= 0.75


def test_orpo_refuses_a_loss_type(tmp_path, lora_run_dir, pref_data_dir):
    proc = run_cli("validate", pref_config(tmp_path, lora_run_dir, pref_data_dir, tmp_path / "x", task="orpo",
                                           preference={"loss_type": ["sigmoid"], "simpo_gamma": -1}))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "preference.loss_type: task orpo has its own loss; leave loss_type empty" in proc.stderr
    assert "preference.simpo_gamma: must not be negative, got -1" in proc.stderr
