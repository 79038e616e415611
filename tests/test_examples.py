"""Every shipped example config is valid, writes to its own runs/<name> folder, and differs from the quickstart
only where its method needs it (so a diff between two examples shows what the method changes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from weitiao.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
DATA_DEMOS = {"one-phrasing", "quickstart-zh"}  # the rephrasing demo and 生成条数: their own data and evaluation


def test_one_example_per_method():
    methods = {load_config(p).method.name for p in EXAMPLES}
    assert methods == {"full", "freeze", "lora", "qlora", "prefix", "prompt", "ptuning"}
    assert {load_config(p).task for p in EXAMPLES} == {"sft", "pretrain", "classify", "regress", "dpo", "kto", "orpo",
                                                            "simpo", "grpo", "reward"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid_and_self_contained(path):
    cfg = load_config(path)
    assert cfg.output.dir == f"runs/{path.stem}"
    for entry in cfg.data.train + cfg.data.val + cfg.data.test:
        assert (path.parent / entry).is_file() or any((path.parent / entry).glob("*.txt")), entry
    quick = load_config(path.parent / "quickstart.yaml")
    if path.stem in DATA_DEMOS:  # other data and evaluation, the quickstart's model and method
        assert (cfg.model, cfg.method) == (quick.model, quick.method)
        assert cfg.rephrase.templates and (path.parent / cfg.rephrase.templates).is_file()
    elif cfg.task == "sft":
        assert (cfg.data, cfg.eval, cfg.model) == (quick.data, quick.eval, quick.model)


def test_preference_examples_use_the_same_pairs_and_dpo_starts_from_the_quickstart():
    folder = EXAMPLES[0].parent
    dpo, kto, orpo, simpo, rm = (load_config(folder / f"{name}.yaml") for name in ("dpo", "kto", "orpo", "simpo",
                                                                                     "reward"))
    assert dpo.data == kto.data == orpo.data == simpo.data == rm.data and dpo.data.format == "preference"
    quickstart = load_config(folder / "quickstart.yaml").output.dir
    assert {c.model.name_or_path for c in (dpo, kto, orpo, simpo)} == {quickstart}
    assert all((dpo.train, dpo.eval, dpo.method) == (c.train, c.eval, c.method) for c in (kto, orpo, simpo))
