"""Model sources: local folder, hub id in the local cache (offline), missing paths; the GGUF cache key. Hub ids
downloaded from a hub: tests/models/test_hub.py."""
from __future__ import annotations

import shutil

import pytest

from conftest import copy_model_files, run_cli, write_config
from weitiao.errors import ModelNotFoundError
from weitiao.models.loading import gguf_cache_folder, resolve_source


def test_local_folder_and_missing(tmp_path, tiny_model_dir):
    assert resolve_source(str(tiny_model_dir)).kind == "folder"
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        resolve_source(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="GGUF file .* does not exist"):
        resolve_source(str(tmp_path / "m.gguf"))
    with pytest.raises(ModelNotFoundError, match="is not in the local cache .* and weitiao is offline"):
        resolve_source("nobody/no-such-model-xyz")  # the suite runs offline (conftest.py)
    with pytest.raises(ModelNotFoundError, match="not a hub id"):
        resolve_source("no-such-model-xyz")


def test_gguf_cache_key_changes_with_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WEITIAO_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"abc")
    first = gguf_cache_folder(str(f))
    assert first.parent == tmp_path / "cache" / "models"
    f.write_bytes(b"abcd")
    assert gguf_cache_folder(str(f)) != first
    # the key is the content: a copy elsewhere (another clone, another virtual environment) shares the entry
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "m.gguf"
    copy.write_bytes(b"abcd")
    assert gguf_cache_folder(str(copy)) == gguf_cache_folder(str(f))


def test_hub_id_from_local_cache_trains_offline(tmp_path, tiny_model_dir, demo_data_dir, monkeypatch):
    """A model laid out as the Hugging Face cache holds it is found by its hub id, with no network."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny-org--tiny-llama" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model_dir, snapshot)
    (cache / "models--tiny-org--tiny-llama" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-llama" / "refs" / "main").write_text("0123abc")
    cfg = write_config(tmp_path / "c.yaml", "tiny-org/tiny-llama", demo_data_dir, tmp_path / "run",
                       train={"max_steps": 1, "eval_steps": 1}, eval={"metrics": [], "compare_base": False})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = run_cli("train", cfg)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tiny-org/tiny-llama" in result.stdout
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_pickle_only_folder_is_refused_unless_converted_deliberately(tmp_path, tiny_model_dir, demo_data_dir,
                                                                   monkeypatch):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    # the old format: a pickled state dict in pytorch_model.bin
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    copy_model_files(tiny_model_dir, pickled, ("tokenizer", "chat_template", "special", "config", "generation"))
    assert not list(pickled.glob("*.safetensors")) and list(pickled.glob("*.bin"))
    cfg = write_config(tmp_path / "c.yaml", pickled, demo_data_dir, tmp_path / "run",
                       train={"max_steps": 1, "eval_steps": 1}, eval={"metrics": [], "compare_base": False})
    refused = run_cli("train", cfg)
    assert refused.returncode == 2 and "holds only pickle weights" in refused.stderr
    assert "model.convert_pickle=true" in refused.stderr and not (tmp_path / "run").exists()
    env_cache = tmp_path / "cache"
    monkeypatch.setenv("WEITIAO_CACHE", str(env_cache))
    converted = run_cli("train", cfg, "model.convert_pickle=true")
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert list(env_cache.glob("models/pickled-*/model.safetensors"))
