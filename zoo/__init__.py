"""A PyTorch Lightning model zoo of remote-sensing vision-language models."""

__version__ = "0.1.0.dev0"
