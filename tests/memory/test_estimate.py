"""The memory estimator: exact parameter counts from configs alone, the params x 4 bytes rule, trainable counts that
match what peft builds, the planner's choices, and the train-time guard."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from conftest import run_cli, write_config
from weitiao.config import MethodConfig
from weitiao.methods.lora import LoraSettings
from weitiao.methods.prefix import PrefixSettings
from weitiao.methods.prompt import PromptSettings
from weitiao.memory.estimate import (
    TrainSettings, activation_family, distributed_estimate, inference_bytes, kv_cache_bytes, trainable_params,
    training_estimate,
)
from weitiao.memory.plan import parse_size, plan
from weitiao.memory.shape import model_shape
from weitiao.methods import apply_method, count_parameters
from weitiao.testing import build_model

LLAMA_70B = dict(model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672,
                 num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False)
LLAMA_1B = dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                tie_word_embeddings=True)


def tiny_config(arch="llama"):
    model = build_model(600, arch=arch)
    return model, json.loads(model.config.to_json_string())


@pytest.mark.parametrize("arch", ["llama", "glm4"])
def test_meta_device_count_is_exact_and_fp32_is_params_times_4(arch):
    model, config = tiny_config(arch)
    shape = model_shape(config)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert inference_bytes(shape, "float32") == 4 * shape.params
    assert inference_bytes(shape, "bfloat16") == 2 * shape.params


def test_llama_70b_and_1b_counts_and_the_gib_per_billion_rule():
    big = model_shape(LLAMA_70B)
    assert big.params == 70_553_706_496  # Llama-3-70B's published size, 70.6B
    assert inference_bytes(big, "float32") == 4 * big.params
    one_b = model_shape(LLAMA_1B)
    assert one_b.params == 1_235_814_400  # Llama-3.2-1B
    assert inference_bytes(one_b, "float32") / 2**30 == pytest.approx(4 * 1.2358144e9 / 2**30)
    assert 4e9 / 2**30 == pytest.approx(3.725, abs=1e-3)  # the rule the README quotes: 3.73 GiB per billion
    # KV cache: 2 x 16 layers x 8 kv heads x 64 x 1024 tokens x 2 bytes
    assert kv_cache_bytes(one_b, 1024, 1, "bfloat16") == 2 * 16 * 8 * 64 * 1024 * 2


@pytest.mark.parametrize("method,cfg", [
    ("lora", MethodConfig(name="lora", lora=LoraSettings(r=4))),
    ("lora_qv", MethodConfig(name="lora", lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))),
    ("prefix", MethodConfig(name="prefix", prefix=PrefixSettings(num_virtual_tokens=6))),
    ("prompt", MethodConfig(name="prompt", prompt=PromptSettings(num_virtual_tokens=6))),
    ("full", MethodConfig(name="full")),
])
def test_trainable_counts_match_what_peft_builds(method, cfg):
    model, config = tiny_config()
    shape = model_shape(config)
    settings = TrainSettings(method=cfg.name, lora_r=4, virtual_tokens=6,
                             lora_targets=tuple(cfg.lora.target_modules))
    assert trainable_params(shape, settings) == count_parameters(apply_method(model, cfg))[0]


def test_breakdown_adds_up_and_sharding_divides_state():
    shape = model_shape(LLAMA_1B)
    s = TrainSettings(method="full", seq=1024, batch=4, weights_dtype="bfloat16", device="cuda")
    parts = training_estimate(shape, s)
    assert parts["total"] == sum(v for k, v in parts.items() if k not in ("total", "trainable_params"))
    assert parts["gradients"] == 2 * shape.params and parts["optimizer_states"] == 4 * shape.params
    zero3 = distributed_estimate(parts, s, 8, "zero3")
    zero1 = distributed_estimate(parts, s, 8, "zero1")
    assert zero3 < zero1 < distributed_estimate(parts, s, 8, "ddp") == parts["total"]
    qlora = training_estimate(shape, TrainSettings(method="qlora", seq=1024, batch=4, device="cuda"))
    # 4-bit decoder linears; the embeddings stay in the load dtype (fp32 here), a quarter of this model
    assert qlora["weights"] < 0.35 * inference_bytes(shape, "float32")
    gc = training_estimate(shape, TrainSettings(method="lora", seq=1024, batch=4, gradient_checkpointing=True))
    assert gc["activations"] < training_estimate(shape, TrainSettings(method="lora", seq=1024, batch=4))["activations"]


def test_fsdp_on_a_cpu_adds_what_the_process_keeps_of_its_gathered_buffers():
    """FSDP on a CPU: glibc keeps the per-layer gather and reduce-scatter buffers, fitted by bench/fsdp_memory.py
    in units of the unsharded weights and gradients (full fine-tuning keeps more than LoRA, which reduce-scatters
    almost no gradient). The other strategies, and CUDA, where it was not measured, get no such term."""
    from weitiao.memory.estimate import fsdp_retained_bytes, load_constants

    shape = model_shape(LLAMA_1B)
    retained = load_constants()["cpu"]["fsdp_retained"]
    assert retained["weights"] > 0 and retained["gradients"] > 0
    for method in ("full", "lora"):
        s = TrainSettings(method=method, seq=512, batch=4, precision="bf16", device="cpu")
        parts = training_estimate(shape, s)
        kept = retained["weights"] * (parts["weights"] + parts["trainable_weights"]) + \
            retained["gradients"] * parts["gradients"]
        assert fsdp_retained_bytes(parts, load_constants()["cpu"]) == pytest.approx(kept)
        assert distributed_estimate(parts, s, 2, "fsdp") == pytest.approx(
            distributed_estimate(parts, s, 2, "fsdp", constants={}) + kept, abs=1)
        assert distributed_estimate(parts, s, 2, "zero3") == distributed_estimate(parts, s, 2, "fsdp", constants={})
        on_gpu = replace(s, device="cuda")
        assert distributed_estimate(parts, on_gpu, 2, "fsdp") == distributed_estimate(parts, on_gpu, 2, "zero3")
    full = training_estimate(shape, TrainSettings(method="full", seq=512, batch=4, precision="bf16", device="cpu"))
    lora = training_estimate(shape, TrainSettings(method="lora", seq=512, batch=4, precision="bf16", device="cpu"))
    assert fsdp_retained_bytes(full, load_constants()["cpu"]) > fsdp_retained_bytes(lora, load_constants()["cpu"])


def test_fused_loss_holds_one_chunk_of_logits():
    shape = model_shape(LLAMA_1B)
    whole = training_estimate(shape, TrainSettings(method="lora", seq=2048, batch=2, device="cuda"))
    fused = training_estimate(shape, TrainSettings(method="lora", seq=2048, batch=2, device="cuda", loss_chunk=1024))
    assert fused["logits_and_loss"] == 1024 * 8 * 128256  # fp32 logits and their cast gradient, one chunk
    assert whole["logits_and_loss"] > 4 * fused["logits_and_loss"]
    small = TrainSettings(method="lora", seq=100, batch=2, device="cuda", loss_chunk=1024, logit_fraction=0.5)
    assert training_estimate(shape, small)["logits_and_loss"] == 100 * 8 * 128256  # fewer trained positions
    assert {k: v for k, v in fused.items() if k not in ("logits_and_loss", "total")} == {
        k: v for k, v in whole.items() if k not in ("logits_and_loss", "total")}


def test_qlora_upcast_to_fp32_has_its_own_activation_constants_over_a_bf16_load():
    """peft's fp32 cast of the unquantized weights keeps the residual stream in fp32: more activation memory,
    fitted apart (bench/results/memory-cuda.json has rows of both). Over an fp32 load the cast changes nothing."""
    shape = model_shape(LLAMA_1B)
    kept = TrainSettings(method="qlora", seq=1024, batch=2, device="cuda", weights_dtype="bfloat16")
    cast = replace(kept, qlora_upcast=True)
    assert (activation_family(kept), activation_family(cast)) == ("qlora", "qlora_upcast")
    assert training_estimate(shape, cast)["activations"] > training_estimate(shape, kept)["activations"]
    assert training_estimate(shape, cast)["weights"] > training_estimate(shape, kept)["weights"]
    assert activation_family(replace(cast, device="cpu", weights_dtype="float32")) == "qlora"


def test_cpu_bf16_rows_have_their_own_constants_and_checkpointing_what_it_leaves():
    """On a CPU, bf16 autocast fits constants of its own (`lora@bf16`, measured on a Xeon with AMX), and
    checkpointing adds what the allocator keeps of the freed recomputations (bench/fit_memory.py)."""
    from weitiao.memory.estimate import layer_constants, load_constants

    cpu = load_constants()["cpu"]
    fp32 = TrainSettings(method="lora", seq=256, batch=4, precision="fp32", device="cpu")
    bf16 = replace(fp32, precision="bf16", weights_dtype="bfloat16")
    assert layer_constants(cpu, fp32) == cpu["layers"]["lora"]
    assert layer_constants(cpu, bf16) == cpu["layers"]["lora@bf16"]
    assert layer_constants(load_constants()["cuda"], replace(bf16, device="cuda")) == \
        load_constants()["cuda"]["layers"]["lora"]  # on CUDA every row is bf16: no separate family
    shape = model_shape(LLAMA_1B)
    gc = replace(bf16, gradient_checkpointing=True)
    kept_inputs = 256 * 4 * shape.layers * shape.hidden * 2  # each layer's bf16 input, exact
    unfitted = {**cpu, "checkpointing": 0.0}
    assert training_estimate(shape, gc, unfitted)["activations"] - kept_inputs == \
        int(256 * 4 * (cpu["layers"]["lora@bf16"][0] * shape.hidden + cpu["layers"]["lora@bf16"][1]
                       * shape.intermediate))  # plus one layer's recomputed activations
    assert training_estimate(shape, gc)["activations"] > training_estimate(shape, gc, unfitted)["activations"]


LLAMA_31_8B = dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                   num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False)


@pytest.mark.parametrize("methods,published", [(("full", "lora", "qlora"), 16.2), (("qlora",), 7.4)],
                         ids=["lora", "qlora"])
def test_plan_for_llama_8b_on_24gib_agrees_with_torchtunes_measurements(methods, published):
    """torchtune's README: Llama 3.1 8B on one RTX 4090 (24 GiB), batch 2, packed to 2048, activation
    checkpointing, a chunked loss, LoRA rank 8 on q, v, output and the MLP: LoRA 16.2 GiB, QLoRA 7.4 GiB peak.
    The plan for the same budget and adapter picks LoRA (full does not fit) with gradient checkpointing, or QLoRA
    when it is the only method allowed (which fits without checkpointing at batch 1, the faster plan), and the
    estimate for torchtune's settings is within 20% of its measurement."""
    shape = model_shape(LLAMA_31_8B)
    assert shape.params == 8_030_261_248  # Llama 3.1 8B
    base = TrainSettings(seq=2048, batch=2, device="cuda", weights_dtype="bfloat16", lora_r=8, loss_chunk=1024,
                         lora_targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    result = plan(shape, parse_size("24GiB"), base, methods=methods)
    method = methods[-2 if len(methods) > 1 else 0]
    assert result.settings.method == method and result.estimate <= parse_size("24GiB")
    if method == "lora":
        assert result.settings.batch == 2 and result.settings.gradient_checkpointing
    torchtune = replace(base, method=method, gradient_checkpointing=True)
    assert trainable_params(shape, torchtune) == 19_660_800  # torchtune's rank-8 adapter
    assert training_estimate(shape, torchtune)["total"] / 2**30 == pytest.approx(published, rel=0.20)


def test_plan_prefers_full_then_lora_then_qlora_and_says_why():
    shape = model_shape(LLAMA_1B)
    base = TrainSettings(seq=1024, batch=8, device="cuda", weights_dtype="bfloat16")
    assert plan(shape, parse_size("141GiB"), base).settings.method == "full"
    smaller = plan(shape, parse_size("8GiB"), base)
    assert smaller.settings is not None and smaller.settings.method in ("lora", "qlora")
    assert smaller.rejected[0].startswith("full: needs at least")
    assert smaller.estimate <= 0.9 * parse_size("8GiB")
    nothing = plan(shape, parse_size("1GiB"), base)
    assert nothing.settings is None and [r.split(":")[0] for r in nothing.rejected] == ["full", "lora", "qlora"]
    with pytest.raises(ValueError):
        parse_size("lots")
    assert parse_size("512MiB") == 512 * 2**20 and parse_size("24 GB") == 24 * 2**30


def test_plan_uses_the_fewest_devices_that_fit_and_shows_each_strategys_cost():
    """The source document's rule: one card when the model fits on it (nothing to exchange between cards), several
    only when it does not. Llama-3.2-1B trains in full on one 80 GiB device of 8; the 70B's LoRA needs its frozen
    base sharded (FSDP), on 2 devices, not all 8. Each strategy on all 8 is shown with its memory and traffic."""
    base = TrainSettings(seq=512, batch=8, device="cuda", weights_dtype="bfloat16")
    one = plan(model_shape(LLAMA_1B), parse_size("80GiB"), base, gpus=8)
    assert (one.settings.method, one.devices, one.settings.batch) == ("full", 1, 8)
    options = {o["strategy"]: o for o in one.options}
    assert set(options) == {"ddp", "zero2", "fsdp"} and all(o["devices"] == 8 and o["fits"] for o in options.values())
    assert options["ddp"]["per_device"] == one.estimate  # DDP copies everything to every device
    assert options["fsdp"]["per_device"] < options["zero2"]["per_device"] < options["ddp"]["per_device"]
    # full fine-tuning: DDP and ZeRO-2 send 2x the gradient bytes, FSDP 3x (ZeRO, arXiv:1910.02054), ring (n-1)/n
    grads = training_estimate(model_shape(LLAMA_1B), one.settings)["gradients"]
    assert options["ddp"]["sent_per_step"] == options["zero2"]["sent_per_step"] == int(7 / 8 * 2 * grads)
    assert options["fsdp"]["sent_per_step"] == pytest.approx(7 / 8 * 3 * grads, rel=1e-6)

    lora = plan(model_shape(LLAMA_70B), parse_size("80GiB"), base, gpus=8, methods=("lora",))
    assert (lora.devices, lora.strategy) == (2, "fsdp") and lora.estimate <= 0.9 * parse_size("80GiB")
    assert lora.settings.method == "lora"
    alone = plan(model_shape(LLAMA_70B), parse_size("80GiB"), base, gpus=1, methods=("lora",))
    assert alone.settings is None and alone.rejected[0].startswith("lora: needs at least") and not alone.options
    by = {o["strategy"]: o for o in lora.options}  # the frozen 70B base, gathered twice a step, dominates FSDP
    assert by["fsdp"]["sent_per_step"] > 100 * by["ddp"]["sent_per_step"] and not by["ddp"]["fits"]


def test_estimate_and_plan_commands(tmp_path, tiny_model_dir, demo_data_dir):
    config_json = tmp_path / "llama70b.json"
    config_json.write_text(json.dumps(LLAMA_70B))
    proc = run_cli("estimate", config_json, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["inference_bytes"]["float32"] == 4 * 70_553_706_496
    assert set(report["training"]) == {"full", "freeze", "lora", "qlora", "prefix", "prompt", "ptuning"}
    proc = run_cli("estimate", config_json, "--methods", "lora,norms")
    assert proc.returncode == 2 and "--methods: no memory model for norms" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("plan", tiny_model_dir, "--memory", "8GiB", "--device", "cpu")
    assert proc.returncode == 0 and "plan: method full" in proc.stdout, proc.stdout + proc.stderr
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run")
    proc = run_cli("plan", LLAMA_70B_PATH(tmp_path), "--memory", "80GiB", "--write-config", cfg, "--out",
                   tmp_path / "planned.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "does not fit: full" in proc.stdout and "plan: method qlora" in proc.stdout
    planned = (tmp_path / "planned.yaml").read_text()
    assert "name: qlora" in planned
    # with several GPUs the plan also picks a strategy, written into the distributed section
    proc = run_cli("plan", LLAMA_70B_PATH(tmp_path), "--memory", "80GiB", "--gpus", "8", "--write-config", cfg,
                   "--out", tmp_path / "planned8.yaml")
    assert proc.returncode == 0, proc.stderr
    strategy = proc.stdout.split("strategy ")[1].split()[0]
    planned = yaml.safe_load((tmp_path / "planned8.yaml").read_text())
    assert planned["distributed"]["strategy"] == {"zero2": "deepspeed"}.get(strategy, strategy)
    assert "--nproc 8" in proc.stdout and "strategies on all 8 devices" in proc.stdout
    proc = run_cli("plan", tiny_model_dir, "--memory", "8GiB", "--device", "cpu", "--gpus", "4", "--write-config",
                   cfg, "--out", tmp_path / "planned1.yaml")
    assert proc.returncode == 0 and "on one device" in proc.stdout and "one device is enough" in proc.stdout
    assert "--nproc" not in proc.stdout
    assert yaml.safe_load((tmp_path / "planned1.yaml").read_text())["distributed"]["strategy"] == "auto"  # as it was
    bad = run_cli("plan", config_json, "--memory", "lots")
    assert bad.returncode == 2 and "--memory" in bad.stderr and "Traceback" not in bad.stderr


def LLAMA_70B_PATH(tmp_path):
    path = tmp_path / "llama70b.json"
    path.write_text(json.dumps(LLAMA_70B))
    return path


def test_train_stops_before_loading_when_the_estimate_does_not_fit(tmp_path, tiny_model_dir, demo_data_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, out)
    proc = run_cli("train", cfg, "train.batch_size=400000")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "memory: the run needs about" in proc.stderr and "train.memory_check=false" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("task", ["sft", "classify"])
@pytest.mark.parametrize("variant", [
    dict(model_type="llama", tie_word_embeddings=True),
    dict(model_type="llama", tie_word_embeddings=False, attention_bias=True, mlp_bias=True, num_key_value_heads=2),
    dict(model_type="llama", tie_word_embeddings=False, head_dim=24, num_key_value_heads=1),
    dict(model_type="mistral", tie_word_embeddings=False, num_key_value_heads=2),
    dict(model_type="qwen2", tie_word_embeddings=True, num_key_value_heads=2),
    dict(model_type="qwen3", tie_word_embeddings=False, head_dim=16, attention_bias=True, num_key_value_heads=2),
    dict(model_type="qwen3", tie_word_embeddings=True, head_dim=8, num_key_value_heads=4, num_labels=1),
])
def test_llama_family_formula_equals_the_meta_device_count(variant, task):
    """The formula (no torch) and the module count (meta device) agree on every number of the shape."""
    from weitiao.memory.shape import analytic_shape, meta_shape

    config = dict(vocab_size=600, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, **variant)
    formula = analytic_shape(config, task)
    assert formula is not None
    assert formula == meta_shape(config, task)


def test_configs_the_formula_does_not_cover_fall_back_to_the_meta_device():
    from weitiao.memory.shape import analytic_shape, meta_shape

    _, glm = tiny_config("glm4")
    assert analytic_shape(glm) is None and model_shape(glm).params > 0
    no_tie = {k: v for k, v in LLAMA_1B.items() if k != "tie_word_embeddings"}
    assert analytic_shape(no_tie) == meta_shape(no_tie)  # untied: these architectures' default
    qwen3 = dict(model_type="qwen3", vocab_size=600, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    assert analytic_shape(qwen3) is None and model_shape(qwen3).head_dim == 128  # qwen3's default head_dim


def test_estimate_of_a_llama_config_needs_neither_torch_nor_transformers(tmp_path):
    """A 70B config.json is answered from the formula: the command imports neither library (importing them is
    what made it take about 10 s on a small CPU)."""
    import subprocess
    import sys

    code = ("import sys; from weitiao.cli import main; main(['estimate', sys.argv[1], '--json']); "
            "sys.stderr.write(repr(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, str(LLAMA_70B_PATH(tmp_path))], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["shape"]["params"] == 70_553_706_496
    assert proc.stderr.strip().endswith("[]")
