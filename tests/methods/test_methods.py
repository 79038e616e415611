"""Each method's trainable parameters, checked by name and count on the tiny Llama."""
from __future__ import annotations

import pytest

from weitiao.testing import build_model
from weitiao.config import FreezeMethodConfig, LoraMethodConfig, MethodConfig
from weitiao.errors import WeitiaoError
from weitiao.methods import apply_method, count_parameters


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything():
    model = apply_method(build_model(100), MethodConfig(name="full"))
    trainable, total = count_parameters(model)
    assert trainable == total


def test_freeze_last_layer_and_named_modules():
    model = apply_method(build_model(100), MethodConfig(name="freeze", freeze=FreezeMethodConfig(last_layers=1)))
    names = trainable_names(model)
    assert names and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in names)
    assert "model.norm.weight" in names and not any(n.startswith("model.layers.0.") for n in names)
    model = apply_method(build_model(100), MethodConfig(
        name="freeze", freeze=FreezeMethodConfig(last_layers=0, modules=["model.layers.0.mlp.*"])))
    assert trainable_names(model) == {f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    with pytest.raises(WeitiaoError, match="matches no module"):
        apply_method(build_model(100), MethodConfig(name="freeze", freeze=FreezeMethodConfig(modules=["nope"])))
    with pytest.raises(WeitiaoError, match="more than the model's 2 layers"):
        apply_method(build_model(100), MethodConfig(name="freeze", freeze=FreezeMethodConfig(last_layers=3)))


def lora_count(hidden=64, inter=128, kv=32, layers=2, r=4):
    # per layer: q (64->64), k (64->32), v (64->32), o (64->64), gate/up (64->128), down (128->64)
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter),
              (inter, hidden)]
    return layers * sum(r * (d_in + d_out) for d_in, d_out in shapes)


def test_lora_all_linear_count_and_names():
    model = apply_method(build_model(100), MethodConfig(name="lora", lora=LoraMethodConfig(r=4, alpha=8)))
    names = trainable_names(model)
    assert all("lora_A" in n or "lora_B" in n for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)
    assert count_parameters(model)[0] == lora_count(r=4)


def test_lora_targets_dora_and_rslora():
    cfg = MethodConfig(name="lora", lora=LoraMethodConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"],
                                                          use_rslora=True))
    model = apply_method(build_model(100), cfg)
    assert {n.split(".")[-4] for n in trainable_names(model)} == {"q_proj", "v_proj"}
    scaling = model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    assert scaling == pytest.approx(8 / 4 ** 0.5)  # rsLoRA: alpha / sqrt(r)
    dora = apply_method(build_model(100), MethodConfig(name="lora", lora=LoraMethodConfig(r=4, use_dora=True)))
    assert any("lora_magnitude_vector" in n for n in trainable_names(dora))
