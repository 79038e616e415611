"""Label masks checked token by token, for the tokenizer's template and each built-in template."""
from __future__ import annotations

import pytest

from weitiao.data.encode import IGNORE_INDEX, encode, prompt_and_reference, segments
from weitiao.data.formats import Example
from weitiao.data.templates import BUILTIN_TEMPLATES, resolve_template
from weitiao.errors import WeitiaoError

CONV = Example((("system", "Be brief."), ("user", "List 2 fruits."), ("assistant", "1. Apple\n2. Pear"),
                ("user", "One more?"), ("assistant", "1. Plum")), None, "t")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def expected(tok, parts):
    """Build ids/labels from (text, trained) parts by hand."""
    input_ids, labels = [], []
    for text, trained in parts:
        seg = ids(tok, text)
        input_ids += seg
        labels += seg if trained else [IGNORE_INDEX] * len(seg)
    return input_ids, labels


def test_tokenizer_chatml_masks_everything_but_answers_and_eot(tiny_tokenizer):
    tpl = resolve_template(tiny_tokenizer, "auto")
    assert tpl.name == "tokenizer" and tpl.eot == "<|im_end|>"
    enc = encode(CONV, tpl, tiny_tokenizer, "assistant")
    want_ids, want_labels = expected(tiny_tokenizer, [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nList 2 fruits.<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        ("1. Apple\n2. Pear<|im_end|>", True),
        ("\n<|im_start|>user\nOne more?<|im_end|>\n<|im_start|>assistant\n", False),
        ("1. Plum<|im_end|>", True),
    ])
    assert enc.input_ids == want_ids
    assert enc.labels == want_labels
    # the trained tokens decode to exactly the two answers, each closed by the end-of-turn token
    trained = [i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
    assert tiny_tokenizer.decode(trained) == "1. Apple\n2. Pear<|im_end|>1. Plum<|im_end|>"
    # the concatenation is the template's own rendering (minus the trailing newline)
    full = tiny_tokenizer.decode(enc.input_ids)
    assert full == tpl.render(tiny_tokenizer, CONV.as_messages()).rstrip("\n")


def test_loss_on_last_and_all(tiny_tokenizer):
    tpl = resolve_template(tiny_tokenizer, "auto")
    last = encode(CONV, tpl, tiny_tokenizer, "last_assistant")
    trained = [i for i, lab in zip(last.input_ids, last.labels) if lab != IGNORE_INDEX]
    assert tiny_tokenizer.decode(trained) == "1. Plum<|im_end|>"
    everything = encode(CONV, tpl, tiny_tokenizer, "all")
    assert everything.labels == everything.input_ids


def test_prompt_ids_in_training_equal_generation_prompt_ids(tiny_tokenizer):
    tpl = resolve_template(tiny_tokenizer, "auto")
    single = Example((("user", "List 2 fruits."), ("assistant", "1. Apple\n2. Pear")), None, "t")
    enc = encode(single, tpl, tiny_tokenizer, "assistant")
    prompt, reference = prompt_and_reference(single, tpl, tiny_tokenizer)
    prompt_ids = ids(tiny_tokenizer, prompt)
    assert enc.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(lab == IGNORE_INDEX for lab in enc.labels[: len(prompt_ids)])
    assert enc.labels[len(prompt_ids)] != IGNORE_INDEX
    assert reference == "1. Apple\n2. Pear"


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_templates_train_answer_plus_eot(tiny_tokenizer, name):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tpl = resolve_template(tok, name)
    eot = BUILTIN_TEMPLATES[name][1]
    assert tpl.eot == eot and tok.convert_ids_to_tokens(tpl.eot_id) == eot
    segs = segments(CONV, tpl, tok, "assistant")
    trained = [t for t, flag in segs if flag]
    assert trained == [f"1. Apple\n2. Pear{eot}", f"1. Plum{eot}"]
    # untrained + trained text is the template's rendering, with the eot appended where the template has none
    rendered = tpl.render(tok, CONV.as_messages())
    joined = "".join(t for t, _ in segs)
    assert rendered.startswith(joined) or joined == rendered + eot


def test_text_rows_train_on_everything_plus_eos(tiny_tokenizer):
    tpl = resolve_template(tiny_tokenizer, "auto")
    enc = encode(Example((), "plain words here", "t"), tpl, tiny_tokenizer, "assistant")
    assert enc.input_ids == ids(tiny_tokenizer, "plain words here" + tiny_tokenizer.eos_token)
    assert enc.labels == enc.input_ids


def test_template_whose_eot_is_not_one_token_is_refused(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}END OF TURN{% endfor %}"
    tok.eos_token = None
    with pytest.raises(WeitiaoError):
        resolve_template(tok, "auto")
