"""`python -m weitiao ARGS` as a fresh process, started from a fork server that has already imported the libraries.

Each CLI call in the tests is still its own process, with its own exit code, stdout, stderr, working folder and
environment: a crash, a `sys.exit` or a stray thread in one call touches nothing else, and the test reads what a
user's terminal would show. What the server saves is the interpreter start: `python -m weitiao` spends about 5 s of
CPU importing torch, transformers, peft, TRL and bitsandbytes before it reads its first argument, and the suite
makes a few hundred such calls. multiprocessing's fork server imports them once per pytest worker, in a process
that has never run a torch operation (so no OpenMP thread pool is copied into a fork), and forks a child per call.

The server imports after `weitiao.api.environment()`, as `python -m weitiao` does. The libraries read some
environment variables once, at import (HF_HOME, HF_HUB_OFFLINE, OMP_NUM_THREADS, ...), so a call whose environment
differs from the one the server started with in such a variable (a test that sets HF_HUB_CACHE, say) runs as a
plain `python -m weitiao` subprocess instead. A variable only weitiao or a user's code reads, when it runs (an API
key, a reward function's log path), is set in the forked child like the rest of its environment.
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# what the server imports, in order (`cli_process_server` runs weitiao's environment() first)
PRELOAD = ["cli_process_server"]
IGNORED = ("PYTEST_CURRENT_TEST", "PYTHONWARNINGS")  # changes per test; applied by the child itself
_server: dict = {}


# torch's compiled-code loader hands a pointer to a loaded module through this process's environment
# (_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR): meaningless in another process, and read by nothing at import
IGNORED_PREFIXES = ("_TORCHINDUCTOR_",)
# Variables some library may read when it is imported (caches, endpoints, threads, paths): a call whose value
# differs from the server's cannot be forked from it. Every other variable is read at run time.
READ_AT_IMPORT = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "OMP_", "MKL_", "KMP_", "CUDA",
                  "NVIDIA", "TOKENIZERS", "MODELSCOPE", "TRL_", "ACCELERATE", "DATASETS", "BITSANDBYTES", "XDG_",
                  "HOME", "PYTHON", "LD_", "TRITON", "TENSORBOARD", "TF_")


def comparable(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in IGNORED and not k.startswith(IGNORED_PREFIXES)}


def set_environment(env: dict) -> None:
    """The environment the server will import the libraries under (the suite's own, set once at its start): a
    call with any other environment runs as a plain subprocess."""
    _server["env"] = comparable(env)


def run(args: list[str], cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """What `subprocess.run([python, -m, weitiao, *args], capture_output=True, text=True)` returns."""
    command = [sys.executable, "-m", "weitiao", *args]
    # --offline changes what the libraries read at import, which the server did long before
    if not forkable(comparable(env)) or "--offline" in args:
        log_fallback(args, comparable(env), _server["env"])
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    if "context" not in _server:
        start_server()
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        out.touch()
        err.write_text("the forked CLI process ended before it redirected its output\n")
        child = _server["context"].Process(target=child_main, args=(args, str(cwd or os.getcwd()), env, out, err))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, child.exitcode, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))


def forkable(env: dict) -> bool:
    """Whether a call with this environment can start from the server: no variable a library reads at import
    differs from the server's."""
    server = _server["env"]
    return not any(k.startswith(READ_AT_IMPORT) for k in set(env) | set(server) if env.get(k) != server.get(k))


def log_fallback(args: list[str], env: dict, server: dict) -> None:
    """With WEITIAO_CLI_FALLBACK_LOG set: which variables sent a call to a plain subprocess (a suite-time check)."""
    path = os.environ.get("WEITIAO_CLI_FALLBACK_LOG")
    if path:
        keys = sorted(k for k in set(env) | set(server) if env.get(k) != server.get(k))
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?')}\t{' '.join(args[:2])}\t{','.join(keys)}\n")


def start_server() -> None:
    """Start the fork server now, with this folder on its PYTHONPATH: multiprocessing hands the server the module
    names to preload but not this process's sys.path, and skips a preload that does not import, silently."""
    import multiprocessing.forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    os.environ.clear()  # the server starts under the suite's environment, whatever the test that asks first set
    os.environ.update(_server["env"], **{k: env[k] for k in IGNORED if k in env})
    os.environ["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [_server["env"].get("PYTHONPATH")] if p])
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(env)
    _server.update(context=context)


def child_main(args: list[str], cwd: str, env: dict, out: Path, err: Path) -> None:
    """In the forked child: the caller's environment and folder, stdout and stderr to files, then what
    weitiao/__main__.py does, and the interpreter's own exit (exit handlers, flushed streams, the exit code)."""
    import atexit
    import traceback
    import warnings

    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    if env.get("PYTHONWARNINGS") == "ignore":
        warnings.simplefilter("ignore")
    import weitiao

    sys.argv = [str(Path(weitiao.__file__).with_name("__main__.py")), *args]
    from weitiao.cli import main

    try:
        code = main(args)
    except SystemExit as stop:  # argparse's usage errors, and any sys.exit inside a command
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
