"""SentenceKV Desktop engine: pure Python over the patched llama.cpp (no Qt import anywhere in this package)."""

__version__ = "0.1.0"
