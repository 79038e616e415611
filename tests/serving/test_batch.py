"""`weitiao generate`: every row answered in order, an interrupted output continued, bad rows named."""
from __future__ import annotations

import json

from conftest import run_cli
from weitiao.config import GenerationConfig
from weitiao.serving import batch
from weitiao.serving.loaded import load


def _input(tmp_path, n=6):
    rows = [{"messages": [{"role": "user", "content": f"Name {k} birds."}]} for k in range(1, n)]
    rows.append({"prompt": "Name 2 tools."})
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_answers_every_row_and_continues_after_a_kill(lora_run_dir, tmp_path):
    loaded = load(str(lora_run_dir), device="cpu")
    gen = GenerationConfig(max_new_tokens=10, batch_size=4)
    src = _input(tmp_path)
    full = tmp_path / "full.jsonl"
    assert batch.run(loaded, str(src), str(full), gen) == 6
    lines = full.read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["index"] for r in records] == list(range(6))
    assert records[-1]["messages"] == [{"role": "user", "content": "Name 2 tools."}]
    assert records[0]["where"].endswith("in.jsonl line 1")

    # a run killed after two rows and in the middle of writing the third
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    batch.run(loaded, str(src), str(partial), gen)
    assert partial.read_text() == full.read_text()


def test_generate_cli_names_the_bad_row_and_writes_nothing(lora_run_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "Name 2 tools."}\n{"messages": [{"role": "user", "content": "a"}, '
                   '{"role": "robot", "content": "b"}]}\nnot json\n')
    out = tmp_path / "out.jsonl"
    proc = run_cli("generate", lora_run_dir, "--input", src, "--out", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.jsonl line 2" in proc.stderr and "bad.jsonl line 3" in proc.stderr
    assert not out.exists()


def test_generate_refuses_to_mix_outputs_of_another_input(lora_run_dir, tmp_path):
    loaded = load(str(lora_run_dir), device="cpu")
    gen = GenerationConfig(max_new_tokens=4, batch_size=4)
    out = tmp_path / "out.jsonl"
    batch.run(loaded, str(_input(tmp_path)), str(out), gen)
    other = tmp_path / "other.jsonl"
    other.write_text('{"prompt": "Name 9 tools."}\n' * 8)
    before = out.read_text()
    try:
        batch.run(loaded, str(other), str(out), gen)
    except Exception as err:  # noqa: BLE001
        assert "another input" in str(err) and "--overwrite" in str(err)
    else:
        raise AssertionError("continued an output made from another input")
    assert out.read_text() == before
    assert batch.run(loaded, str(other), str(out), gen, overwrite=True) == 8
