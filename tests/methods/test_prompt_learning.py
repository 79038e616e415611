"""Prefix tuning / P-Tuning v2, prompt tuning and P-tuning on tiny Llama, GLM and GLM-4 models.

The cached decoder must give exactly the tokens of an uncached step-by-step reference (peft's own training forward
over the whole sequence), a saved adapter must reload to the same logits, and a resume must restore the prompt
encoder that peft's adapter file does not hold.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

from conftest import copy_model_files, run_cli, write_config
from weitiao.config import MethodConfig, load_config
from weitiao.errors import WeitiaoError
from weitiao.evaluation.virtual_tokens import first_forward, generate_ids, reference_ids
from weitiao.methods import apply_method
from weitiao.testing import build_model, save_tiny_model
from weitiao.workflows import sft

PEFT_CONFIGS = {
    "prefix": lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5),
    "prefix-projection": lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5,
                                                    prefix_projection=True, encoder_hidden_size=32),
    "prompt": lambda: PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5),
    "ptuning": lambda: PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5,
                                           encoder_hidden_size=32),
}
PROMPTS = ["<|im_start|>user\nList three fruits: apple, pear, fig.<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nCount: a, b<|im_end|>\n<|im_start|>assistant\n"]


def prompted_model(arch: str, method: str, vocab: int):
    torch.manual_seed(0)
    model = get_peft_model(build_model(vocab, arch=arch), PEFT_CONFIGS[method]())
    with torch.no_grad():  # random init is tiny; scale it so the virtual tokens change every prediction
        for p in model.parameters():
            if p.requires_grad:
                p.mul_(20.0)
    return model.eval()


@pytest.mark.parametrize("arch", ["llama", "glm", "glm4"])
@pytest.mark.parametrize("method", list(PEFT_CONFIGS))
def test_cached_decoding_equals_uncached_reference(arch, method, tiny_tokenizer):
    model = prompted_model(arch, method, len(tiny_tokenizer))
    tiny_tokenizer.padding_side = "left"
    batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    tiny_tokenizer.padding_side = "right"
    stop = (tiny_tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    cached = generate_ids(model, batch["input_ids"], batch["attention_mask"], 16, stop, tiny_tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for i, prompt in enumerate(PROMPTS):
        ids = tiny_tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        expected = reference_ids(model, ids, 16, stop)[0, ids.shape[1]:]
        assert cached[i, width: width + len(expected)].tolist() == expected.tolist(), f"row {i}"
    # and the virtual tokens matter: the base model alone continues differently
    with torch.no_grad():
        tuned = first_forward(model, batch["input_ids"], batch["attention_mask"])[0].logits[:, -1]
        with model.disable_adapter():
            base = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1]
    assert (tuned - base).abs().max() > 1e-2


def test_prefix_round_trip_on_glm4_is_exact(tmp_path, tiny_tokenizer, demo_data_dir):
    """Train P-Tuning v2 (prefix with projection) on a tiny GLM-4, reload the saved prefix onto a fresh base: the
    reloaded adapter changes the logits exactly as the trained one did."""
    model_dir = save_tiny_model(tmp_path / "glm4", arch="glm4")
    cfg = write_config(tmp_path / "c.yaml", model_dir, demo_data_dir, tmp_path / "run",
                       method={"name": "prefix", "prefix": {"num_virtual_tokens": 4, "projection": True,
                                                            "projection_hidden": 32}},
                       train={"max_steps": 4, "batch_size": 4, "learning_rate": 5e-2, "eval_steps": 2,
                              "precision": "fp32"}, eval={"metrics": [], "compare_base": False})
    result = sft.run(load_config(cfg))
    batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    trained = result.model.eval()
    with torch.no_grad():
        trained_logits = trained(**batch).logits
        with trained.disable_adapter():
            base_logits = trained(**batch).logits
    assert (trained_logits - base_logits).abs().max() > 1e-3  # the prefix does change the model
    # the adapter holds only the prefix: 2 (K, V) x 2 layers x 4 virtual tokens x 32 (2 kv heads x 16)
    saved = result.out_dir / "adapter"
    from safetensors.torch import load_file

    tensors = load_file(str(saved / "adapter_model.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {"prompt_embeddings": (4, 2 * 2 * 32)}
    fresh = PeftModel.from_pretrained(build_model(len(tiny_tokenizer), arch="glm4"), saved).eval()
    fresh.get_base_model().load_state_dict(trained.get_base_model().state_dict())  # the same frozen base
    with torch.no_grad():
        reloaded_logits = fresh(**batch).logits
    assert torch.equal(reloaded_logits, trained_logits)


@pytest.mark.parametrize("method,settings", [
    ("prefix", {"prefix": {"num_virtual_tokens": 4}}),
    ("prompt", {"prompt": {"num_virtual_tokens": 4, "init_text": "Count the items and list them"}}),
    ("ptuning", {"ptuning": {"num_virtual_tokens": 4, "encoder_hidden": 32, "encoder": "lstm"}}),
])
def test_trains_saves_and_reloads_through_eval(tmp_path, tiny_model_dir, demo_data_dir, method, settings):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       method={"name": method, **settings}, train={"max_steps": 4, "batch_size": 4,
                                                                   "learning_rate": 3e-2, "eval_steps": 2,
                                                                   "precision": "fp32"})
    result = sft.run(load_config(cfg))
    assert result.metrics["test"]["tuned"]["loss"] < result.metrics["test"]["base"]["loss"]
    assert json.loads((result.out_dir / "adapter" / "adapter_config.json").read_text())["num_virtual_tokens"] == 4
    out = tmp_path / "eval.json"
    proc = run_cli("eval", result.out_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded, trained = json.loads(out.read_text()), result.metrics["test"]["tuned"]
    # the saved encoder output is computed for one row, the trained one per batch row: equal up to float noise
    assert reloaded["metrics"]["loss"] == pytest.approx(trained["loss"], rel=1e-5)
    assert {k: reloaded["metrics"][k] for k in ("count_list", "exact_match")} == {
        k: trained[k] for k in ("count_list", "exact_match")}
    tuned_predictions = [json.loads(line)["tuned"] for line in (result.out_dir / "predictions.jsonl").open()]
    assert reloaded["predictions"] == tuned_predictions


def test_resume_restores_the_prompt_encoder(tmp_path, tiny_model_dir, demo_data_dir):
    """peft's adapter file holds the P-tuning encoder's output, not the encoder: resuming from it alone would
    train on from wrong weights. The resumed run must end with exactly the uninterrupted run's parameters."""
    settings = dict(method={"name": "ptuning", "ptuning": {"num_virtual_tokens": 4, "encoder_hidden": 32}},
                    train={"max_steps": 6, "batch_size": 4, "learning_rate": 3e-2, "eval_steps": 3,
                           "load_best_at_end": False, "save_total_limit": 3, "precision": "fp32"},
                    eval={"metrics": [], "compare_base": False})
    full = sft.run(load_config(write_config(tmp_path / "a.yaml", tiny_model_dir, demo_data_dir, tmp_path / "a",
                                            **settings)))
    expected = {n: p.detach().clone() for n, p in full.model.named_parameters() if p.requires_grad}
    # the same run, killed after its first checkpoint: drop the later checkpoint and mark the run unfinished
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "checkpoint-6")
    (tmp_path / "b" / "run.json").write_text('{"status": "running"}')
    resumed = sft.run(load_config(write_config(tmp_path / "b.yaml", tiny_model_dir, demo_data_dir, tmp_path / "b",
                                               **settings)))
    got = {n: p.detach() for n, p in resumed.model.named_parameters() if p.requires_grad}
    assert got.keys() == expected.keys() and len(got) > 2  # the encoder's weights, not just an embedding
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


def test_unsupported_architectures_fail_before_training(tiny_tokenizer):
    hybrid = build_model(len(tiny_tokenizer))
    hybrid.config.layer_types = ["sliding_attention", "full_attention"]
    with pytest.raises(WeitiaoError, match="full attention.*use method lora"):
        apply_method(hybrid, MethodConfig(name="prefix"))
    remote = build_model(len(tiny_tokenizer))
    remote.config.auto_map = {"AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"}
    for method in ("prefix", "prompt", "ptuning"):
        with pytest.raises(WeitiaoError, match="remote code"):
            apply_method(remote, MethodConfig(name=method))


def test_cli_refuses_prefix_on_remote_code_model_before_writing(tmp_path, tiny_model_dir, demo_data_dir):
    model_dir = tmp_path / "remote"
    model_dir.mkdir()
    copy_model_files(tiny_model_dir, model_dir, prefixes=("tokenizer", "chat_template", "special", "model",
                                                          "generation"))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    (model_dir / "config.json").write_text(json.dumps(config))
    cfg = write_config(tmp_path / "c.yaml", model_dir, demo_data_dir, tmp_path / "run", method={"name": "prefix"})
    proc = run_cli("train", cfg)
    assert proc.returncode == 2
    assert "remote code" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
