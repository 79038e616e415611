"""weitiao (微调): fine-tune a pretrained transformer on your own data, and prove what it changed.

`weitiao.train`, `weitiao.evaluate` and `weitiao.load_run` are the Python API (`weitiao.api`), imported on first
use: `import weitiao.config` and the other modules do not pay for the training stack.
"""

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "load_run", "Run", "__version__"]


def __getattr__(name: str):
    if name in ("train", "evaluate", "load_run", "Run"):
        import importlib

        return getattr(importlib.import_module("weitiao.api"), name)
    raise AttributeError(f"module 'weitiao' has no attribute {name!r}")
