"""Shared fixtures: the tiny random Llama and tokenizer of `weitiao.testing`, a demo-data slice, CLI helpers.

The suite runs on one pytest-xdist worker more than the cores (pyproject's addopts, `pytest_xdist_auto_num_workers`
below), a test file at a time on one worker, slowest files first. Each worker, and every process it starts, gets
its share of the CPU's cores as torch threads (at least one): two processes of two threads each on two cores wait
on each other at every parallel region."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:  # before torch is imported, so that its thread pool and the CLI processes we start see it
    THREADS = str(max(1, (os.cpu_count() or 1) // WORKERS))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = THREADS

# Before any library reads them: no test reaches the real hub. Hub ids resolve from the local cache; the hub tests
# start their own hub on loopback (tests/hub_server.py) and switch this off for the processes they start.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"

from torch._inductor.runtime.cache_dir_utils import cache_dir  # noqa: E402

# torch.compile sets TORCHINDUCTOR_CACHE_DIR in this process the first time it compiles (to its default, when unset):
# set now to that same value, so that the environment the CLI calls inherit does not change under the fork server
cache_dir()

import cli_process  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from weitiao.api import environment  # noqa: E402


# What every entry point sets first (offline, quiet), before the libraries read it. Set once here, so that the
# environment the tests' CLI processes see is the same before and after an in-process test calls an entry point
# (tests/cli_process.py forks a call from its server only when it is).
environment()
cli_process.set_environment(dict(os.environ))

from weitiao.testing import build_tokenizer, save_tiny_model, write_demo_slice  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The files that take longest, started first so that the workers finish together; every other file keeps its
# place after them. First the SmolLM2 demo proofs (`-m slow`), then, for the README's test command, the files that
# start several processes, the benchmarks' tests, and the bundled model's short run.
SLOWEST_FIRST = ("integration/test_quickstart.py", "integration/test_reward_demo.py",
                 "integration/test_rephrase_augment.py", "integration/test_classify_demo.py",
                 "training/test_distributed.py", "models/test_hub.py", "workflows/test_training_options.py",
                 "training/test_speed_bench.py", "ui/test_ui_jobs.py", "workflows/test_sft.py",
                 "training/test_kill_resume.py", "ui/test_ui_browser.py", "integration/test_bundled_model.py",
                 "models/test_qwen3.py",
                 "workflows/test_preference.py", "training/test_guards.py")
# Last: the tests that start from the quickstart's run (the quickstart_run fixture), so that whichever worker takes
# them finds it trained already, and the other worker is done (they take every core; the files just before them are
# short, so the two do not share the cores for long: torch.compile's test beside DPO took 47 s instead of 17).
LAST = ("integration/test_dpo_from_quickstart.py",)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's addopts): one worker more than the cores. A worker spends part of its time waiting
    on the processes and servers its tests start; a third worker on 2 cores fills that wait (each worker and the
    processes it starts get one core's share of threads, above)."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = Path(str(item.fspath)).as_posix()
        if any(path.endswith("tests/" + name) for name in LAST):
            return len(SLOWEST_FIRST) + 1
        return next((i for i, name in enumerate(SLOWEST_FIRST) if path.endswith("tests/" + name)), len(SLOWEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def copy_model_files(src: Path, dst: Path, prefixes=("tokenizer", "chat_template", "special")) -> None:
    """Copy the non-weight files of a model folder (tokenizer, template; config with the right prefixes)."""
    for f in src.iterdir():
        if f.name.startswith(tuple(prefixes)):
            (dst / f.name).write_bytes(f.read_bytes())


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    """A small slice of the demo task (fast to train on)."""
    return write_demo_slice(tmp_path_factory.mktemp("demo-data"))


def write_config(path: Path, model_dir, data_dir, out_dir, **sections) -> Path:
    """A small config for the tiny model; `sections` override whole keys, e.g. train={"max_steps": 4}."""
    cfg = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"format": "messages", "train": str(Path(data_dir) / "train.jsonl"),
                 "val": str(Path(data_dir) / "val.jsonl"), "test": str(Path(data_dir) / "test.jsonl"),
                 "max_length": 128},
        "method": {"name": "lora", "lora": {"r": 4, "alpha": 8}},
        "train": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "eval_steps": 2, "logging_steps": 1,
                  "precision": "fp32"},
        "eval": {"metrics": ["count_list", "exact_match"], "generation": {"max_new_tokens": 12, "batch_size": 4}},
        "output": {"dir": str(out_dir)},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `python -m weitiao ARGS` in a fresh process, as a user would (forked from a server that has imported
    the libraries already: tests/cli_process.py)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return cli_process.run([str(a) for a in args], cwd, env, timeout)


# ---------------------------------------------------------------- finished tiny runs (serving tests)


def _train_tiny(tmp_path_factory, model_dir, data_dir, name: str, **sections):
    from weitiao.config import load_config
    from weitiao.workflows import sft

    tmp = tmp_path_factory.mktemp(name)
    cfg = write_config(tmp / "c.yaml", model_dir, data_dir, tmp / name, **sections)
    return sft.run(load_config(cfg)).out_dir


@pytest.fixture(scope="session")
def lora_run_dir(tmp_path_factory, tiny_model_dir, demo_data_dir) -> Path:
    """A finished 4-step LoRA run; lr 3e-2 so the adapter visibly moves the tiny model's answers."""
    return _train_tiny(tmp_path_factory, tiny_model_dir, demo_data_dir, "lora", train={"learning_rate": 3e-2})


@pytest.fixture(scope="session")
def prefix_run_dir(tmp_path_factory, tiny_model_dir, demo_data_dir) -> Path:
    return _train_tiny(tmp_path_factory, tiny_model_dir, demo_data_dir, "prefix",
                       method={"name": "prefix", "prefix": {"num_virtual_tokens": 4}}, train={"learning_rate": 1e-2})


# ---------------------------------------------------------------- the quickstart, trained once per session


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The shipped examples/quickstart.yaml on the bundled SmolLM2-135M-Instruct, unchanged except for the output
    folder, trained once per test session: the tests that read it run on either pytest-xdist worker, and the first
    to ask trains it under a file lock while a second waits and reads the same folder (pytest-xdist's recipe for a
    session fixture that runs once). The tests that need it are ordered so that the wait is rare."""
    import json

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root  # the folder this session's workers share
    out, record = root / "quickstart" / "run", root / "quickstart" / "process.json"
    out.parent.mkdir(exist_ok=True)
    with FileLock(str(root / "quickstart.lock")):
        if not record.is_file():
            proc = run_cli("train", REPO / "examples" / "quickstart.yaml", f"output.dir={out}", timeout=1500)
            record.write_text(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout,
                                          "stderr": proc.stderr}))
    proc = subprocess.CompletedProcess(["weitiao", "train"], **json.loads(record.read_text()))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] over every event file in the folder (a run that logs after training ends opens a
    second file)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list] = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        reader = EventAccumulator(str(events))
        reader.Reload()
        for tag in reader.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in reader.Scalars(tag))
    return found


# ---------------------------------------------------------------- pages, as a browser shows them


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(page, png, height=1600) -> np.ndarray:
    """The page rendered by headless Chromium, as an (H, W, 3) array."""
    from PIL import Image

    browser = chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (scripts/setup.sh installs it with apt-get when run as "
                    "root: apt-get install chromium-headless-shell)")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", f"--window-size=1200,{height}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB"))


def assert_not_blank(pixels: np.ndarray):
    dark = (pixels.sum(axis=2) < 384).mean()  # text, lines and chart marks
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert dark > 0.005, f"only {dark:.4f} of the pixels are dark: the page looks blank"
    assert colours > 50, f"{colours} colours: no charts rendered"
