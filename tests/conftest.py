"""Shared fixtures. No test touches the network: the tiny model's tokenizer comes from the local llama.cpp tree
that native/build.py keeps under the cache dir, the built-in models from their installed part packages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
SUPPORT_DIR = (
    TESTS_DIR / "support"
)  # what tests share that is not a test: the tiny model, harnesses, the fake worker
if str(SUPPORT_DIR) not in sys.path:
    sys.path.insert(0, str(SUPPORT_DIR))


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


# the stand-in Hugging Face hub (tests/support/fake_hub.py): a payload and a hub serving it, HF_ENDPOINT pointed at it


@pytest.fixture()
def payload() -> bytes:
    return b"GGUF" + os.urandom(600 * 1024)


@pytest.fixture()
def hub(payload, monkeypatch, tmp_path):
    from fake_hub import CHUNK, FILE, FakeHub

    monkeypatch.setenv("SKV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)  # several progress steps for a small file
    h = FakeHub({FILE: payload})
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    yield h
    h.close()


# a MainWindow on the scripted worker (tests/support/fake_worker.py): make(token_delay, data_dir, **settings)


@pytest.fixture
def make_window(qtbot, tmp_path):
    from fake_worker import FakeWorker

    from app.main_window import MainWindow
    from app.settings import AppSettings

    made = []

    def make(token_delay: float = 0.005, data_dir: Path | None = None, **settings):
        w = MainWindow(
            model_path="/models/fake-model.gguf",
            bridge_factory=lambda on_event: FakeWorker(on_event, token_delay=token_delay),
            settings=AppSettings(**settings),
            data_dir=data_dir or tmp_path / "data",
        )
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        qtbot.waitUntil(lambda: w.model_ready, timeout=5000)
        return w

    yield make
    for w in made:
        w.shutdown()
