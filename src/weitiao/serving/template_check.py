"""The template round trip: what a server sends the model must be what training taught it.

The most reported failure when a tuned model is served: the serving stack renders the conversation with another
template (a default system prompt, a missing newline, a different end-of-turn token), so the model sees a prompt it
was never trained on, or never stops. `check_round_trip` renders each conversation both ways:

- training: `data.encode.encode`, segment by segment, with the run's template (the ids the model learned from);
- serving: the served tokenizer's own `chat_template` over the conversation minus its last answer, with
  `add_generation_prompt`, tokenized in one piece (what `weitiao serve`, or any OpenAI-compatible server that
  loads the folder, sends), plus the served stop tokens.

It passes when the served prompt's ids are exactly the training ids up to the answer, and the trained answer ends
with a token the server stops on.
"""
from __future__ import annotations

from weitiao.data.encode import encode
from weitiao.data.formats import Example, RowProblem
from weitiao.data.templates import ChatTemplate
from weitiao.errors import WeitiaoError

PROBE = [  # used when a run has no test rows to check with
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name 3 colours."},
    {"role": "assistant", "content": "1. Red\n2. Green\n3. Blue"},
    {"role": "user", "content": "Two more, please."},
    {"role": "assistant", "content": "1. Black\n2. White"},
]


class TemplateMismatch(WeitiaoError):
    """The served prompt or stop tokens differ from training; the message shows both renderings."""


def check_round_trip(training_tokenizer, training_template: ChatTemplate, served_tokenizer, served_stop_ids,
                     conversations: list[list[dict]]) -> int:
    """Raise TemplateMismatch on the first conversation that serves differently from training; returns the number
    of conversations checked (those training could encode: the others it refuses as well)."""
    from jinja2.exceptions import TemplateError

    if not getattr(served_tokenizer, "chat_template", None):
        raise TemplateMismatch("the served tokenizer has no chat_template: a server would not know how to build "
                               "prompts; export or serve from the run folder, which carries the training template")
    checked = 0
    for n, messages in enumerate(conversations):
        if not messages or messages[-1]["role"] != "assistant":
            continue
        example = Example(tuple((m["role"], m["content"]) for m in messages), None, f"conversation {n}")
        try:
            trained = encode(example, training_template, training_tokenizer, "all").input_ids
        except RowProblem:
            # training refuses such a conversation too: a template that renders an earlier turn differently once
            # later turns follow (Qwen3's drops the <think> block of answers before the last question) cannot be
            # trained on it, so there are no training ids to compare with
            continue
        checked += 1
        try:
            served_text = served_tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                                               add_generation_prompt=True)
        except TemplateError as err:
            raise TemplateMismatch(f"the served chat template fails on conversation {n}: {err}") from None
        served = served_tokenizer(served_text, add_special_tokens=False)["input_ids"]
        training_text = training_template.render(training_tokenizer, messages[:-1], add_generation_prompt=True)
        if trained[: len(served)] != served:
            at = next((i for i, (a, b) in enumerate(zip(trained, served)) if a != b), min(len(trained), len(served)))
            raise TemplateMismatch(
                f"conversation {n}: the served prompt differs from training at token {at} "
                f"(training id {_at(trained, at)}, served id {_at(served, at)}).\n"
                f"  training renders: {training_text!r}\n  served renders:   {served_text!r}")
        answer = trained[len(served):]
        if not answer or answer[-1] not in set(served_stop_ids):
            end = training_tokenizer.convert_ids_to_tokens(answer[-1:]) if answer else []
            stops = served_tokenizer.convert_ids_to_tokens(list(served_stop_ids))
            raise TemplateMismatch(
                f"conversation {n}: training ends the answer with {end}, but the server stops on {stops}: "
                "the served model would not stop where it learned to")
    if not checked:
        raise TemplateMismatch("no sample conversation renders incrementally with the training template, so none "
                               "could be checked")
    return checked


def _at(ids: list[int], i: int):
    return ids[i] if i < len(ids) else "end"


def sample_conversations(loaded, limit: int = 4) -> list[list[dict]]:
    """Up to `limit` test conversations of the run (else the validation or training rows), plus the probe."""
    convs: list[list[dict]] = []
    cfg = loaded.config
    if cfg is not None:
        from weitiao.data.dataset import load_splits

        try:
            splits = load_splits(cfg.data, cfg.base_dir, skip_bad_rows=True)
        except WeitiaoError:
            splits = None  # the data moved since training: the probe still checks the template
        if splits is not None:
            rows = splits.test or splits.val or splits.train
            convs += [ex.as_messages() for ex in rows[:limit] if ex.text is None]
    return convs + [PROBE]
