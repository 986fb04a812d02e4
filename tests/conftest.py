"""Shared fixtures. No test touches the network: the tiny model's tokenizer comes from the local llama.cpp tree
that native/build.py keeps under the cache dir, the built-in models from their installed part packages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: real-model or long tests")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight llama GGUF (see tests/tiny_gguf.py), written once per session."""
    from tiny_gguf import VOCAB_FILE, find_vocab_file, write_tiny_gguf

    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip(
            f"{VOCAB_FILE} not found in a llama.cpp tree under the cache dir; run native/build.py first"
        )
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf", vocab)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The verified built-in default, Qwen2.5-Coder-0.5B-Instruct Q4_K_M (assembled into the cache on first use)."""
    from engine.models import default_model_path as resolve

    return resolve()


@pytest.fixture(scope="session")
def gemma_model_path() -> Path:
    """gemma-3-270m Q4_K_M (the dev extra): the sliding-window (iSWA) model, SentenceKV on its 3 global layers."""
    from engine.models import builtin_model_path

    return builtin_model_path("gemma-3-270m")
