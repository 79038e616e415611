"""Chat templates: the tokenizer's own, or a built-in one by name, plus the token that ends an assistant turn.

A `ChatTemplate` is a Jinja string (the same format as `tokenizer.chat_template`, so it is saved with the tokenizer
and used unchanged by chat and serving) and `eot`, the text that ends every assistant turn. Training labels
include `eot`, so the tuned model learns to stop; generation stops on it.
"""
from __future__ import annotations

from dataclasses import dataclass

from weitiao.errors import WeitiaoError

_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_QWEN = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" + _CHATML
)
_LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# GLM-4 has no closing tag: an assistant turn ends where the model writes the next `<|user|>`.
_GLM4 = (
    "[gMASK]<sop>{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
_CHATGLM3 = (
    "[gMASK]sop{% for message in messages %}{{ '<|' + message['role'] + '|>\\n ' + message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n ' }}{% endif %}"
)

# name -> (jinja, eot)
BUILTIN_TEMPLATES: dict[str, tuple[str, str]] = {
    "chatml": (_CHATML, "<|im_end|>"),
    "qwen": (_QWEN, "<|im_end|>"),
    "llama3": (_LLAMA3, "<|eot_id|>"),
    "glm4": (_GLM4, "<|user|>"),
    "chatglm3": (_CHATGLM3, "<|user|>"),
}


@dataclass(frozen=True)
class ChatTemplate:
    name: str  # "tokenizer" for the tokenizer's own, else the built-in name
    jinja: str
    eot: str  # text that ends an assistant turn
    eot_id: int  # its single token id
    stop_ids: tuple[int, ...]  # generation stops on any of these

    def render(self, tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(
            messages, chat_template=self.jinja, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def describe(self) -> dict:
        return {"name": self.name, "eot": self.eot, "eot_id": self.eot_id, "stop_ids": list(self.stop_ids)}


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _infer_eot(tokenizer, jinja: str) -> str:
    """The special token the template writes right after an assistant message; else the eos token."""
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ANSWER_END_PROBE"}]
    text = tokenizer.apply_chat_template(probe, chat_template=jinja, tokenize=False)
    after = text.split("ANSWER_END_PROBE", 1)[1] if "ANSWER_END_PROBE" in text else ""
    specials = sorted(set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {})),
                      key=len, reverse=True)
    for tok in specials:
        if tok and after.startswith(tok):
            return tok
    if tokenizer.eos_token is None:
        raise WeitiaoError("the chat template writes no end-of-turn token and the tokenizer has no eos token; "
                           "set model.chat_template to a built-in template")
    return tokenizer.eos_token


def resolve_template(tokenizer, name: str) -> ChatTemplate:
    """Pick the template for `tokenizer` and install it as `tokenizer.chat_template` (so it is saved with it)."""
    if name == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise WeitiaoError("the model's tokenizer has no chat template; set model.chat_template to one of: "
                               + ", ".join(BUILTIN_TEMPLATES))
        jinja = tokenizer.chat_template
        eot = _infer_eot(tokenizer, jinja)
        label = "tokenizer"
    else:
        jinja, eot = BUILTIN_TEMPLATES[name]
        label = name
    eot_id = _single_token_id(tokenizer, eot)
    if eot_id is None:
        raise WeitiaoError(f"chat template {label!r} ends assistant turns with {eot!r}, which is not a single "
                           "token of this model's tokenizer; choose the template that matches the model")
    tokenizer.chat_template = jinja
    stops = [eot_id]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != eot_id:
        stops.append(tokenizer.eos_token_id)
    return ChatTemplate(label, jinja, eot, eot_id, tuple(stops))
