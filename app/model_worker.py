"""ModelWorker: owns the llama_cpp.Llama on its own QThread; the window talks to it through queued signals.

Minimal first version (the full app uses engine.worker.EngineWorker + app/bridge.py, a later issue).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot


class ModelWorker(QObject):
    """Lives on a worker thread. Inbound: load(), generate() (invoked through queued signals).
    Outbound: loaded(description), token(text), finished(reason), failed(message)."""

    loaded = Signal(str)
    token = Signal(str)
    finished = Signal(str)
    failed = Signal(str)

    def __init__(self, n_ctx: int = 2048):
        super().__init__()
        self._llm = None
        self._n_ctx = n_ctx
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Thread-safe: the decode loop checks the flag after every token."""
        self._stop.set()

    @Slot(str)
    def load(self, model_path: str) -> None:
        try:
            if not model_path:
                from engine.models import default_model_path

                model_path = str(default_model_path())
            import llama_cpp

            self._llm = llama_cpp.Llama(
                model_path=model_path,
                n_ctx=self._n_ctx,
                n_threads=max(1, os.cpu_count() or 1),
                flash_attn=True,
                swa_full=False,
                verbose=False,
            )
        except Exception as e:  # noqa: BLE001 - no exception crosses the thread: report it
            self.failed.emit(f"could not load the model: {' '.join(str(e).split())}")
            return
        self.loaded.emit(Path(model_path).name)

    @Slot(str, int)
    def generate(self, prompt: str, max_tokens: int) -> None:
        if self._llm is None:
            self.failed.emit("no model loaded")
            return
        self._stop.clear()
        try:
            for chunk in self._llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=0.0, stream=True
            ):
                text = chunk["choices"][0]["text"]
                if text:
                    self.token.emit(text)
                if self._stop.is_set():
                    self.finished.emit("stopped")
                    return
        except Exception as e:  # noqa: BLE001
            self.failed.emit(f"generation failed: {' '.join(str(e).split())}")
            return
        self.finished.emit("done")

    @Slot()
    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
