"""`weitiao export --format gguf`: one GGUF file that an independent reader (the `gguf` package's reader, and
transformers' own GGUF loader and de-quantizer) reads back as the tuned model, an Ollama Modelfile with the run's
template and stops, and refusals that write nothing. The quickstart's GGUF answers: tests/integration."""
from __future__ import annotations

import json

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import _train_tiny, run_cli
from weitiao.serving import export, gguf_export
from weitiao.testing import save_tiny_model


def _greedy(model, tokenizer, rows, max_new_tokens=12):
    answers = []
    for row in rows:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def test_f16_gguf_reads_back_as_the_tuned_run_with_an_ollama_modelfile(lora_run_dir, tmp_path):
    out = tmp_path / "gguf"
    proc = run_cli("export", lora_run_dir, "--out", out, "--format", "gguf", "--quant", "f16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "weitiao_export.json").read_text())
    name = summary["file"]
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "Modelfile", "weitiao_export.json"])
    assert summary["logit_check"]["top1_agreement"] == 1.0

    reader = gguf.GGUFReader(out / name)  # the package's own reader, independent of the writer's bookkeeping
    assert reader.fields["general.architecture"].contents() == "llama"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    assert reader.fields["tokenizer.chat_template"].contents() == (lora_run_dir / "chat_template.jinja").read_text()

    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=name)
    rows = [json.loads(line) for line in (lora_run_dir / "predictions.jsonl").read_text().splitlines()]
    assert _greedy(model, tokenizer, rows) == [r["tuned"] for r in rows]

    modelfile = (out / "Modelfile").read_text()
    template = json.loads((lora_run_dir / "template.json").read_text())
    assert modelfile.splitlines()[0] == f"FROM ./{name}"
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and template["eot"] == "<|im_end|>"
    # the tiny model's ChatML template, as Ollama's Go template says it
    assert ('TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}'
            '<|im_end|>\n{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
            '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}'
            '<|im_start|>assistant\n"""') in modelfile


def test_q8_0_quantizes_every_matrix_in_blocks_and_stays_close(lora_run_dir, tmp_path):
    summary = export.run(str(lora_run_dir), str(tmp_path / "q8"), format="gguf")  # q8_0 is the default
    assert summary["quant"] == "q8_0"
    reader = gguf.GGUFReader(tmp_path / "q8" / summary["file"])
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {t for n, t in types.items() if n.endswith("norm.weight")} == {"F32"}
    assert {t for n, t in types.items() if not n.endswith("norm.weight")} == {"Q8_0"}
    assert 0 < summary["logit_check"]["max_total_variation"] <= gguf_export.MAX_TV["q8_0"]
    f16_bytes = sum(int(t.n_elements) * 2 for t in reader.tensors)
    assert summary["bytes"] < 0.7 * f16_bytes  # 8.5 bits a weight, plus the vocabulary and the f32 norms


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_f32_gguf_matches_the_merged_model_for_each_architecture(tmp_path_factory, demo_data_dir, tmp_path, arch):
    """In f32 only the layout can differ: llama's Q/K rows interleaved for llama.cpp's RoPE and back by
    transformers' reader, qwen2's written as they are, its biases and untied output included."""
    base = save_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}"), arch=arch)
    run_dir = _train_tiny(tmp_path_factory, base, demo_data_dir, f"lora-{arch}", train={"learning_rate": 3e-2})
    summary = export.run(str(run_dir), str(tmp_path / "f32"), format="gguf", quant="f32")
    assert summary["logit_check"]["max_total_variation"] < 1e-5, summary["logit_check"]
    types = {t.name for t in gguf.GGUFReader(tmp_path / "f32" / summary["file"]).tensors}
    assert ("output.weight" in types) == (arch == "qwen2") and ("blk.0.attn_q.bias" in types) == (arch == "qwen2")

    from peft import PeftModel

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run_dir / "adapter")
    merged = merged.merge_and_unload()
    read = AutoModelForCausalLM.from_pretrained(tmp_path / "f32", gguf_file=summary["file"], dtype=torch.float32)
    want, got = merged.state_dict(), read.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]


def test_models_and_requests_gguf_cannot_carry_are_refused_with_nothing_written(tmp_path_factory, demo_data_dir,
                                                                                 prefix_run_dir, lora_run_dir,
                                                                                 tmp_path):
    glm = save_tiny_model(tmp_path_factory.mktemp("tiny-glm"), arch="glm")
    glm_run = _train_tiny(tmp_path_factory, glm, demo_data_dir, "lora-glm")
    cases = [
        ((glm_run, "--format", "gguf"), "the model is a GlmForCausalLM; weitiao writes GGUF for LlamaForCausalLM"),
        ((prefix_run_dir, "--format", "gguf"), "virtual tokens, which llama.cpp cannot load"),
        ((lora_run_dir, "--format", "gguf", "--dtype", "bf16"), "--dtype: one of fp32, bf16, fp16, for --format hf"),
        ((lora_run_dir, "--quant", "q8_0"), "--quant: one of f16, q8_0, f32, for --format gguf"),
    ]
    for n, (args, message) in enumerate(cases):
        out = tmp_path / f"out{n}"
        proc = run_cli("export", args[0], "--out", out, *args[1:])
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr
        assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_ollama_template_keeps_a_default_system_prompt_and_refuses_what_it_cannot_say(tiny_model_dir):
    """SmolLM2's template adds a system prompt when the conversation has none; Ollama's template must too. A
    template that renders the last turn differently has no per-turn equivalent and is refused."""
    from weitiao.data.templates import ChatTemplate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with_default = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}"
                    "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
                    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                    "{% endif %}")
    template = ChatTemplate("tokenizer", with_default, "<|im_end|>", tokenizer.convert_tokens_to_ids("<|im_end|>"),
                            (tokenizer.convert_tokens_to_ids("<|im_end|>"),))
    tokenizer.chat_template = with_default
    pieces = gguf_export.turn_pieces(template, tokenizer)
    assert pieces.default_system == "<|im_start|>system\nBe brief.<|im_end|>\n"
    convs = [[{"role": "user", "content": "Name 2 fruits."}],
             [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
              {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}]]
    assert gguf_export.check_pieces(pieces, template, tokenizer, convs) == 2
    assert pieces.go_template().startswith('{{ if ne (index .Messages 0).Role "system" }}<|im_start|>system\nBe brief.')

    last_differs = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if not loop.last %}{{ '\n' }}"
                    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '\nassistant: ' }}{% endif %}")
    tokenizer.chat_template = last_differs
    odd = ChatTemplate("tokenizer", last_differs, "<|im_end|>", template.eot_id, template.stop_ids)
    with pytest.raises(Exception, match="no Ollama equivalent"):
        gguf_export.turn_pieces(odd, tokenizer)
