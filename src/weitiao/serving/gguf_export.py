"""A merged run as one GGUF file, for llama.cpp, Ollama and LM Studio, with an Ollama `Modelfile`.

Written with the `gguf` package (the file format, llama.cpp's tensor-name tables and its quantizers). The converter
itself, llama.cpp's `convert_hf_to_gguf.py`, is not on PyPI and pulls in the whole llama.cpp tree, so the few steps
a Llama-family model needs are here, and each is checked by reading the file back:

- tensor names: `gguf.get_tensor_name_map` (model.layers.0.self_attn.q_proj.weight -> blk.0.attn_q.weight);
- Q and K rows: Hugging Face's Llama checkpoints store them for `rotate_half` RoPE (each head's first half of
  dimensions paired with its second half), llama.cpp's LLAMA graph rotates adjacent pairs, so each head's rows
  are interleaved back: (heads, 2, head_dim/2, in) -> (heads, head_dim/2, 2, in). Qwen2 uses llama.cpp's
  NEOX-style RoPE, the same as Hugging Face's, and is written as it is;
- quantization: f16, or q8_0 (blocks of 32 weights sharing one fp16 scale, 8.5 bits a weight), for every matrix
  whose rows divide into blocks; vectors (norms, biases) stay f32, as llama.cpp keeps them;
- the tokenizer (byte-level BPE: tokens, types, merges, special ids) and the run's chat template.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from weitiao.errors import WeitiaoError

QUANTS = ("f16", "q8_0", "f32")
# The read-back check against the merged fp32 model (total variation between next-token distributions, and top-1
# agreement; see export.py). Measured on the quickstart run (SmolLM2-135M, 315 positions): see docs/guides/export.md.
MAX_TV = {"f32": 1e-3, "f16": 0.05, "q8_0": 0.25}
MIN_TOP1_AGREEMENT = {"f32": 0.999, "f16": 0.98, "q8_0": 0.93}


@dataclass(frozen=True)
class GgufArchitecture:
    arch: str  # gguf.MODEL_ARCH member name
    interleave_qk: bool  # Q/K rows permuted from rotate_half order to llama.cpp's adjacent pairs


# transformers class -> how llama.cpp names and lays it out (Mistral is the LLAMA graph in llama.cpp too)
ARCHITECTURES = {
    "LlamaForCausalLM": GgufArchitecture("LLAMA", True),
    "MistralForCausalLM": GgufArchitecture("LLAMA", True),
    "Qwen2ForCausalLM": GgufArchitecture("QWEN2", False),
}


def architecture_of(config) -> GgufArchitecture:
    """The GGUF layout of a transformers config, or a WeitiaoError saying why it cannot be written."""
    name = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    if name not in ARCHITECTURES:
        raise WeitiaoError(f"--format gguf: the model is a {name}; weitiao writes GGUF for "
                           f"{', '.join(ARCHITECTURES)}. Export a Hugging Face folder (--format hf) and convert it "
                           "with llama.cpp's convert_hf_to_gguf.py")
    rope = rope_parameters(config)
    if rope.get("rope_type", "default") not in ("default", None):
        raise WeitiaoError(f"--format gguf: the model uses {rope['rope_type']!r} RoPE scaling, which weitiao's GGUF "
                           "writer does not carry over; export a Hugging Face folder (--format hf) and convert it "
                           "with llama.cpp's convert_hf_to_gguf.py")
    return ARCHITECTURES[name]


def rope_parameters(config) -> dict:
    """RoPE settings across transformers versions (4.x: rope_theta + rope_scaling; 5.x: rope_parameters)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return params


def head_size(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def interleave_qk(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """(heads * head_dim, ...) rows from rotate_half order to adjacent pairs, per head."""
    shape = weight.shape
    return weight.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_gguf(path: Path, model, tokenizer, template, quant: str, name: str, pre: str) -> dict:
    """Write `model` (a merged, dense transformers causal LM) and its tokenizer to `path` as GGUF; returns the
    tensor counts by stored type."""
    import gguf

    config = model.config
    layout = architecture_of(config)
    arch = getattr(gguf.MODEL_ARCH, layout.arch)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    write_hyperparameters(writer, config, quant, name)
    write_tokenizer(writer, tokenizer, template, config.vocab_size, pre)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    head_dim = head_size(config)
    counts: dict[str, int] = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp uses token_embd for the output when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise WeitiaoError(f"--format gguf: no GGUF name for the tensor {hf_name}")
        tensor = tensor.detach().float()
        if layout.interleave_qk and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in hf_name else config.num_key_value_heads
            assert tensor.shape[0] == heads * head_dim, (hf_name, tuple(tensor.shape))
            tensor = interleave_qk(tensor, heads)
        qtype = stored_type(tensor, quant)
        data = gguf.quants.quantize(tensor.numpy(), qtype)  # q8_0: uint8 rows of 34-byte blocks
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def stored_type(tensor: torch.Tensor, quant: str):
    """How one tensor is stored: vectors in f32; matrices in the chosen type (q8_0 needs rows of whole blocks)."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    if tensor.dim() < 2 or quant == "f32":
        return Q.F32
    if quant == "q8_0":
        block, _ = GGML_QUANT_SIZES[Q.Q8_0]  # (weights per block, bytes per block) = (32, 34)
        return Q.Q8_0 if tensor.shape[-1] % block == 0 else Q.F16
    return Q.F16


def write_hyperparameters(writer, config, quant: str, name: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope_parameters(config)["rope_theta"]))
    writer.add_rope_dimension_count(head_size(config))
    writer.add_vocab_size(config.vocab_size)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise WeitiaoError("--format gguf: the run's tokenizer has no fast (tokenizers) version to read the "
                           "vocabulary from")
    return json.loads(backend.to_str())


# A tokenizer.json pre-tokenizer -> the name llama.cpp gives that pre-tokenization (`tokenizer.ggml.pre`), which
# llama.cpp needs to split text as the model's own tokenizer does. Only the layouts we can name with certainty.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def pre_tokenizer_name(spec: dict) -> str | None:
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds[:1] == ["Split"]:
        regex = (parts[0].get("pattern") or {}).get("Regex")
        return {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}.get(regex)
    return None


SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> size
STRING, ARRAY = 8, 9


def read_string(path: str | Path, key: str) -> str | None:
    """One string value from a GGUF file's key-value section (layout: ggml's docs/gguf.md), or None.

    Ours because gguf.GGUFReader builds every field, the whole vocabulary and merge list included, before it
    answers (about 10 s for SmolLM2's); this skips over values by their lengths until it reaches `key`."""
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            return None
        (kv_count,) = struct.unpack_from("<Q", buf, 16)  # after magic, version (u32), tensor count (u64)
        at = 24

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, at)
            return buf[at + 8: at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        def skip(kind: int, at: int) -> int:
            if kind == STRING:
                return string(at)[1]
            if kind == ARRAY:
                item, count = struct.unpack_from("<IQ", buf, at)
                at += 12
                if item in SCALAR_BYTES:
                    return at + count * SCALAR_BYTES[item]
                for _ in range(count):
                    at = skip(item, at)
                return at
            return at + SCALAR_BYTES[kind]

        for _ in range(kv_count):
            name, at = string(at)
            (kind,) = struct.unpack_from("<I", buf, at)
            at += 4
            if name == key:
                return string(at)[0] if kind == STRING else None
            at = skip(kind, at)
    return None


def write_tokenizer(writer, tokenizer, template, vocab_size: int, pre: str | None) -> None:
    """Byte-level BPE only (the `gpt2` tokenizer model in llama.cpp): SmolLM, Llama 3, Qwen2 and most recent
    models. Ids past the tokenizer's end (a vocabulary padded for speed) become unused placeholder tokens."""
    import gguf

    spec = tokenizer_json(tokenizer)
    if spec.get("model", {}).get("type") != "BPE" or pre is None:
        raise WeitiaoError("--format gguf: weitiao writes byte-level BPE tokenizers whose pre-tokenization llama.cpp "
                           "names (gpt-2, smollm, llama-bpe, qwen2); this one is "
                           f"{spec.get('model', {}).get('type')} with pre-tokenizer "
                           f"{json.dumps(spec.get('pre_tokenizer'))[:200]}. Export a Hugging Face folder instead")
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))):
        tokens.append(token)
        types.append(gguf.TokenType.CONTROL if token in special else
                     gguf.TokenType.USER_DEFINED if token in added else gguf.TokenType.NORMAL)
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id),
                             (writer.add_eot_token_id, template.eot_id)):
        if token_id is not None:
            setter(int(token_id))
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    writer.add_chat_template(tokenizer.chat_template)


# ------------------------------------------------------------------------------------------ the Ollama Modelfile

SENTINELS = {"system": "\x01SYSTEM\x01", "user": "\x01USER\x01", "assistant": "\x01ASSISTANT\x01"}


@dataclass
class TurnPieces:
    """A chat template as Ollama's Go templates can say it: the text before and after each role's content, the
    text opening the assistant's answer, and what the template adds when there is no system message."""
    before: dict[str, str]
    after: dict[str, str]
    generation_prompt: str
    default_system: str

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """What the Go template below renders for these messages (the same pieces in the same order)."""
        text = self.default_system if messages and messages[0]["role"] != "system" else ""
        for m in messages:
            text += self.before[m["role"]] + m["content"] + self.after[m["role"]]
        return text + (self.generation_prompt if add_generation_prompt else "")

    def go_template(self) -> str:
        def go(text: str) -> str:  # a Go template literal: only "{{" needs escaping
            return text.replace("{{", '{{ "{{" }}')

        branches = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{go(self.before[role])}'
                           f'{{{{ .Content }}}}{go(self.after[role])}' for i, role in enumerate(SENTINELS))
        default = (f'{{{{ if ne (index .Messages 0).Role "system" }}}}{go(self.default_system)}{{{{ end }}}}'
                   if self.default_system else "")
        return f'{default}{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{go(self.generation_prompt)}'


def turn_pieces(template, tokenizer) -> TurnPieces:
    """Cut the run's template into per-role pieces by rendering conversations with placeholder contents."""
    s, u, a = (SENTINELS[r] for r in ("system", "user", "assistant"))
    u2 = "\x01USER2\x01"

    def render(*turns, prompt=False):
        return template.render(tokenizer, [{"role": r, "content": c} for r, c in turns], add_generation_prompt=prompt)

    two = render(("system", s), ("user", u))
    three = render(("system", s), ("user", u), ("assistant", a))
    four = render(("system", s), ("user", u), ("assistant", a), ("user", u2))
    opened = render(("system", s), ("user", u), prompt=True)
    if not (three.startswith(two) and four.startswith(three) and opened.startswith(two)):
        raise WeitiaoError("the chat template does not render a conversation turn by turn, so it has no Ollama "
                           "equivalent")
    user_before, user_after = four[len(three):].split(u2)
    assistant_before, assistant_after = three[len(two):].split(a)
    system_before, rest = two.split(s)
    between = rest.split(u)[0]  # the system turn's end, then the user turn's start
    alone = render(("user", u))
    before_alone = alone[: alone.index(u)]  # a default system turn, if the template adds one, then the user's start
    if not (between.endswith(user_before) and before_alone.endswith(user_before)):
        raise WeitiaoError("the chat template opens a user turn differently by position, so it has no Ollama "
                           "equivalent")
    system_after = between[: len(between) - len(user_before)]
    default_system = before_alone[: len(before_alone) - len(user_before)]
    return TurnPieces({"system": system_before, "user": user_before, "assistant": assistant_before},
                      {"system": system_after, "user": user_after, "assistant": assistant_after},
                      opened[len(two):], default_system)


def modelfile(gguf_name: str, pieces: TurnPieces, stops: list[str]) -> str:
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{pieces.go_template()}"""']
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    return "\n".join(lines) + "\n"


def check_pieces(pieces: TurnPieces, template, tokenizer, conversations: list[list[dict]]) -> int:
    """The Modelfile's template must give the run's own prompt for every sample conversation."""
    for n, messages in enumerate(conversations):
        prompt = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
        want = template.render(tokenizer, prompt, add_generation_prompt=True)
        got = pieces.render(prompt)
        if got != want:
            raise WeitiaoError(f"the Ollama template differs from the run's on conversation {n}:\n  run:     "
                               f"{want!r}\n  Ollama:  {got!r}")
    return len(conversations)
