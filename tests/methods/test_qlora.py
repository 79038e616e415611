"""QLoRA on the tiny model: the base is stored quantized, only the adapter is saved, and a reload (which
re-quantizes the base) reproduces the trained model's metrics."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_config
from weitiao.config import load_config
from weitiao.workflows import sft


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_saves_adapter_and_reloads(tmp_path, tiny_model_dir, demo_data_dir, bits):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       method={"name": "qlora", "qlora": {"bits": bits}, "lora": {"r": 4, "alpha": 8}})
    result = sft.run(load_config(cfg))
    weights = result.metrics["base_weights"]
    # the tiny model is mostly embeddings (kept in fp32), so the saving is smaller than on a real model
    assert weights["stored_bytes"] < 0.6 * weights["fp32_bytes"]
    adapter = result.out_dir / "adapter"
    assert sorted(p.name for p in adapter.iterdir() if p.suffix in (".safetensors", ".json")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    out = tmp_path / "eval.json"
    proc = run_cli("eval", result.out_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded, trained = json.loads(out.read_text())["metrics"], result.metrics["test"]["tuned"]
    # generations are identical; the loss agrees to float noise of the 4-bit CPU kernel (about 1e-6)
    assert {k: reloaded[k] for k in ("count_list", "exact_match")} == {
        k: trained[k] for k in ("count_list", "exact_match")}
    assert reloaded["loss"] == pytest.approx(trained["loss"], rel=1e-5)
    assert result.metrics["test"]["tuned"]["loss"] < result.metrics["test"]["base"]["loss"]


@pytest.mark.parametrize("upcast", [False, True])
def test_unquantized_weights_keep_the_load_dtype_unless_upcast(tiny_model_dir, upcast):
    """A base loaded in bf16 (as on CUDA): its embeddings and norms stay bf16 (method.qlora.upcast_fp32 off,
    what the memory estimate counts) or become fp32; the LoRA matrices are fp32 either way, and a step trains."""
    import torch
    from transformers import AutoModelForCausalLM

    from weitiao.config import MethodConfig
    from weitiao.methods.qlora import QLoraSettings
    from weitiao.methods import qlora

    cfg = MethodConfig(name="qlora", qlora=QLoraSettings(compute_dtype="bfloat16", upcast_fp32=upcast))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16,
                                                 **qlora.load_kwargs(cfg, "cpu"))
    model = qlora.apply(model, cfg)
    kept = torch.float32 if upcast else torch.bfloat16
    assert model.get_input_embeddings().weight.dtype == kept
    assert {p.dtype for n, p in model.named_parameters() if "norm" in n} == {kept}
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and {p.dtype for p in trained} == {torch.float32}
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
