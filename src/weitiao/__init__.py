"""weitiao (微调): fine-tune a pretrained transformer on your own data, and prove what it changed."""

__version__ = "0.1.0"
