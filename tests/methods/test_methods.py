"""Each method's trainable parameters, checked by name and count on the tiny Llama."""
from __future__ import annotations

import pytest

from weitiao.testing import build_model
from weitiao.config import MethodConfig
from weitiao.methods.freeze import FreezeSettings
from weitiao.methods.lora import LoraSettings
from weitiao.errors import WeitiaoError
from weitiao.methods import apply_method, count_parameters


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything():
    model = apply_method(build_model(100), MethodConfig(name="full"))
    trainable, total = count_parameters(model)
    assert trainable == total


def test_freeze_last_layer_and_named_modules():
    model = apply_method(build_model(100), MethodConfig(name="freeze", freeze=FreezeSettings(last_layers=1)))
    names = trainable_names(model)
    assert names and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in names)
    assert "model.norm.weight" in names and not any(n.startswith("model.layers.0.") for n in names)
    model = apply_method(build_model(100), MethodConfig(
        name="freeze", freeze=FreezeSettings(last_layers=0, modules=["model.layers.0.mlp.*"])))
    assert trainable_names(model) == {f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    with pytest.raises(WeitiaoError, match="matches no module"):
        apply_method(build_model(100), MethodConfig(name="freeze", freeze=FreezeSettings(modules=["nope"])))
    with pytest.raises(WeitiaoError, match="more than the model's 2 layers"):
        apply_method(build_model(100), MethodConfig(name="freeze", freeze=FreezeSettings(last_layers=3)))


def lora_count(hidden=64, inter=128, kv=32, layers=2, r=4):
    # per layer: q (64->64), k (64->32), v (64->32), o (64->64), gate/up (64->128), down (128->64)
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter),
              (inter, hidden)]
    return layers * sum(r * (d_in + d_out) for d_in, d_out in shapes)


def test_lora_all_linear_count_and_names():
    model = apply_method(build_model(100), MethodConfig(name="lora", lora=LoraSettings(r=4, alpha=8)))
    names = trainable_names(model)
    assert all("lora_A" in n or "lora_B" in n for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)
    assert count_parameters(model)[0] == lora_count(r=4)


def test_lora_targets_dora_and_rslora():
    cfg = MethodConfig(name="lora", lora=LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"],
                                                          use_rslora=True))
    model = apply_method(build_model(100), cfg)
    assert {n.split(".")[-4] for n in trainable_names(model)} == {"q_proj", "v_proj"}
    scaling = model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    assert scaling == pytest.approx(8 / 4 ** 0.5)  # rsLoRA: alpha / sqrt(r)
    dora = apply_method(build_model(100), MethodConfig(name="lora", lora=LoraSettings(r=4, use_dora=True)))
    assert any("lora_magnitude_vector" in n for n in trainable_names(dora))


def test_lora_input_casts_skipped_under_autocast_are_bit_identical():
    """bf16 base weights, fp32 adapters, bf16 autocast: peft's cast of each adapted layer's input to fp32 is a round
    trip, so skipping it changes neither the loss nor any gradient, and the graph holds fewer copies."""
    import torch

    from weitiao.methods import lora

    cfg = MethodConfig(name="lora", lora=LoraSettings(r=4, alpha=8))
    model = apply_method(build_model(100).to(torch.bfloat16), cfg)
    for name, p in model.named_parameters():
        if p.requires_grad:  # B starts at zero: give it values, so A's gradient is not trivially zero
            p.data = torch.randn_like(p, dtype=torch.float32) * 0.1
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))

    def loss_grads_copies(skip: bool):
        model.zero_grad(set_to_none=True)
        with lora.autocast_input_casts_skipped(model, cfg, torch.bfloat16 if skip else None, "single"), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        copies, stack, seen = 0, [loss.grad_fn], set()
        while stack:  # count the autograd graph's dtype casts
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            copies += type(fn).__name__.startswith("ToCopyBackward")
            stack.extend(f for f, _ in fn.next_functions)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, copies

    loss_cast, grads_cast, copies_cast = loss_grads_copies(False)
    loss_skip, grads_skip, copies_skip = loss_grads_copies(True)
    assert torch.equal(loss_cast, loss_skip)
    assert grads_cast.keys() == grads_skip.keys()
    assert all(torch.equal(grads_cast[n], grads_skip[n]) for n in grads_cast)
    assert any(g.abs().sum() > 0 for n, g in grads_cast.items() if "lora_A" in n)
    assert copies_cast - copies_skip >= 2 * 7  # 2 layers x 7 adapted linears: at least one input cast each is gone
    # after the block peft casts again, and nothing is skipped for DoRA, under FSDP, or without autocast
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.cast_input_dtype_enabled
    dora = MethodConfig(name="lora", lora=LoraSettings(r=4, use_dora=True))
    for method, amp, strategy in ((dora, torch.bfloat16, "single"), (cfg, torch.bfloat16, "fsdp"),
                                  (cfg, None, "single")):
        with lora.autocast_input_casts_skipped(model, method, amp, strategy):
            assert layer.cast_input_dtype_enabled
    with lora.autocast_input_casts_skipped(model, cfg, torch.bfloat16, "ddp"):
        assert not layer.cast_input_dtype_enabled


def test_every_method_is_registered_and_the_config_tables_agree_with_its_flags():
    """One registry (methods.METHODS), and the config's compatibility tables (data) name the same methods: every
    `method.name` value is registered, and train.compile's methods are exactly those without virtual tokens."""
    import typing

    from weitiao import config
    from weitiao.methods import METHODS, method_of

    literal = typing.get_args(typing.get_type_hints(config.MethodConfig)["name"])
    assert literal == tuple(METHODS)
    assert set(config.COMPILED_METHODS) == {m.name for m in METHODS.values() if not m.virtual_tokens}
    for rule in config.TASK_RULES.values():
        assert rule.methods is None or set(rule.methods) <= set(METHODS)
    for name, method in METHODS.items():
        assert method.name == name and method.saves in ("adapter", "model")
        assert method_of(name) is method
        if method.section:  # its module defines the settings, config composes them, and they check themselves
            assert method.settings_type.__module__ == f"weitiao.methods.{name}"
            assert type(method.settings(config.MethodConfig())) is method.settings_type
            assert hasattr(method.settings_type, "problems")
    assert [n for n, m in METHODS.items() if m.continues_lora] == ["lora", "qlora"]
    assert not method_of("full").adapter and method_of("prefix").virtual_tokens


TOY_METHOD = '''"""A toy method: trains the norms only (a test's, not weitiao's)."""
from dataclasses import dataclass

from weitiao.methods.protocol import Method
from weitiao.settings import doc


@dataclass
class NormsSettings:
    include_final: bool = doc("Train the final norm too, not only the layers' norms.", True)
    lr_scale: float = doc("Not used: a second field, to show the section is the module's own.", 1.0)

    def problems(self, where: str = "method.norms") -> list[str]:
        return [] if self.lr_scale > 0 else [f"{where}.lr_scale: must be above 0, got {self.lr_scale}"]


def apply(model, cfg, gradient_checkpointing=False):
    for name, p in model.named_parameters():
        p.requires_grad = "norm" in name and (cfg.norms.include_final or ".layers." in name)
    return model


METHOD = Method("norms", apply, help="trains the RMSNorm weights", section="norms", settings_type=NormsSettings)
'''


def test_a_new_method_is_one_module_and_one_register_line(tmp_path, monkeypatch, tiny_model_dir, demo_data_dir):
    """The module above and `register(norms.METHOD)`: its name is a `method.name`, its settings a checked section
    of the config and of its reference, and `weitiao train` runs it. Nothing in weitiao names it."""
    import importlib

    from conftest import write_config
    from weitiao import config
    from weitiao.methods import METHODS, register, unregister
    from weitiao.workflows import sft

    (tmp_path / "norms_method.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    norms = importlib.import_module("norms_method")
    register(norms.METHOD)
    try:
        with pytest.raises(WeitiaoError, match=r"method.norms.lr_scale: must be above 0, got -1"):
            config.load_config(write_config(tmp_path / "bad.yaml", tiny_model_dir, demo_data_dir, tmp_path / "bad",
                                            method={"name": "norms", "norms": {"lr_scale": -1}}))
        assert "`method.norms.include_final`" in config.config_reference(markdown=True)
        cfg = config.load_config(write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                                              method={"name": "norms", "norms": {"include_final": False}},
                                              train={"max_steps": 2, "eval_steps": 2, "precision": "fp32"},
                                              eval={"metrics": [], "compare_base": False}))
        result = sft.run(cfg)
        trained = {n for n, p in result.model.named_parameters() if p.requires_grad}
        assert trained and all(".layers." in n and "norm" in n for n in trained)
        assert (tmp_path / "run" / "model" / "model.safetensors").is_file()  # saves="model", the default
    finally:
        unregister("norms")
    assert "norms" not in METHODS and "method.norms" not in config.config_reference(markdown=True)
    with pytest.raises(WeitiaoError, match="method.name: 'norms' is not one of"):
        config.load_config(write_config(tmp_path / "gone.yaml", tiny_model_dir, demo_data_dir, tmp_path / "gone",
                                        method={"name": "norms"}))
