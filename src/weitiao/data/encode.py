"""Turn an example into token ids and labels, with loss only where the model should learn.

The rendered conversation is cut into segments of text, each either trained (an assistant answer plus its
end-of-turn token) or not (everything else), and each segment is tokenized on its own. So the prompt's ids in
training are exactly the ids of the same prompt at generation time, and the label mask is exact by construction:
labels are the input ids on trained segments and -100 (ignored by the cross-entropy) elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

from weitiao.data.formats import Example, RowProblem
from weitiao.data.templates import ChatTemplate

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def segments(example: Example, template: ChatTemplate, tokenizer, loss_on: str) -> list[tuple[str, bool]]:
    """[(text, trained)] whose concatenation is the rendered conversation (ending at the last eot)."""
    if example.text is not None:
        return [(example.text + (tokenizer.eos_token or ""), True)]
    messages = example.as_messages()
    assistant_idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained_idx = set(assistant_idx[-1:] if loss_on == "last_assistant" else assistant_idx)
    out: list[tuple[str, bool]] = []
    done = ""  # rendered text covered by `out`
    for i in assistant_idx:
        prompt = template.render(tokenizer, messages[:i], add_generation_prompt=True)
        full = template.render(tokenizer, messages[: i + 1])
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise RowProblem("the chat template does not render this conversation incrementally (a later turn "
                             f"changes earlier text, or turns do not end with {template.eot!r}); "
                             "choose another model.chat_template")
        content = messages[i]["content"]
        start = full.find(content, len(prompt))
        if start < 0:
            raise RowProblem("the chat template altered the assistant text; cannot locate it for the labels")
        end = start + len(content)
        answer = full[len(prompt):end]  # whatever the template puts before the content belongs to the answer
        out.append((prompt[len(done):], False))
        out.append((answer + template.eot, i in trained_idx))
        # the next prompt must continue this exact text, eot included (checked at the top of the loop)
        done = full[:end] + template.eot
    if loss_on == "all":
        out = [(text, True) for text, _ in out]
    return [(t, trained) for t, trained in out if t]


def encode(example: Example, template: ChatTemplate, tokenizer, loss_on: str) -> Encoded:
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(example, template, tokenizer, loss_on):
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if trained else [IGNORE_INDEX] * len(seg)
    return Encoded(ids, labels)


def prompt_and_reference(example: Example, template: ChatTemplate, tokenizer) -> tuple[str, str]:
    """The generation prompt (everything before the last answer) and the reference answer, for evaluation."""
    messages = example.as_messages()
    if example.text is not None:
        raise RowProblem("text rows have no prompt/answer to generate")
    prompt = template.render(tokenizer, messages[:-1], add_generation_prompt=True)
    return prompt, messages[-1]["content"]


@dataclass
class EncodedPair:
    """A preference pair as TRL's DPO and reward collators take it: one prompt, two continuations."""

    prompt_ids: list[int]
    chosen_ids: list[int]  # the preferred answer and its end-of-turn token
    rejected_ids: list[int]


def encode_pair(example: Example, template: ChatTemplate, tokenizer) -> EncodedPair:
    """Token ids of a preference row, cut exactly as SFT cuts its last answer (same segments, same template), so
    the prompt ids are those the model sees when it answers at inference."""
    if example.rejected is None:
        raise RowProblem("not a preference row: no rejected answer")
    ids = {}
    for name, answer in (("chosen", example.messages[-1][1]), ("rejected", example.rejected)):
        turns = example.messages[:-1] + (("assistant", answer),)
        enc = encode(Example(turns, None, example.where), template, tokenizer, "last_assistant")
        start = next(i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX)
        ids[name] = (enc.input_ids[:start], enc.input_ids[start:])
    if ids["chosen"][0] != ids["rejected"][0]:  # segments are tokenized apart, so this is a template bug
        raise RowProblem("the prompt tokenizes differently before the chosen and the rejected answer")
    return EncodedPair(ids["chosen"][0], ids["chosen"][1], ids["rejected"][1])
