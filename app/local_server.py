"""The OpenAI-compatible server (`skv serve`) the Settings dialog starts: a subprocess on the app's settings."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QProcess, Signal

from app.settings import AppSettings, fitting_ctx
from engine.params import SERVER_PORT


class LocalServer(QObject):
    """`skv serve` started from Settings: a subprocess on the app's model, context and retrieval settings,
    listening on loopback (its own copy of the model). `changed` carries its address once it listens, "" once it
    has stopped."""

    changed = Signal(str)
    PORT = SERVER_PORT

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.address = ""
        self._proc: QProcess | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, s: AppSettings, port: int = PORT) -> None:
        if self._proc is not None:
            return
        args = [
            "-m",
            "engine.cli",
            "serve",
            "--port",
            str(port),
            "--n-ctx",
            str(fitting_ctx(s.model_path, s.n_ctx)[0]),
            "--threads",
            str(s.threads),
            "--gpu-layers",
            str(s.gpu_layers),
            "--policy",
            s.policy,
            "--budget",
            str(s.budget),
            "--sink",
            str(s.sink),
            "--ring",
            str(s.ring),
            "--max-tokens",
            str(s.max_tokens),
        ]
        args += ["--model", s.model_path] if s.model_path else []
        args += ["--rpc", s.rpc] if s.rpc else []
        args += ["--rpc-allow-remote"] if s.rpc and s.rpc_allow_remote else []
        proc = self._proc = QProcess(self)
        proc.readyReadStandardError.connect(self._read)
        proc.finished.connect(self._ended)
        proc.start(sys.executable, args)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            if not self._proc.waitForFinished(5000):
                self._proc.kill()
                self._proc.waitForFinished(2000)

    def _read(self) -> None:
        for line in bytes(self._proc.readAllStandardError()).decode(errors="replace").splitlines():
            if line.startswith("skv: serving ") and " at " in line:  # engine/cli/serve.py's first line
                self.address = line.split(" at ", 1)[1].split()[0]
                self.changed.emit(self.address)

    def _ended(self, *_: object) -> None:
        self._proc, self.address = None, ""
        self.changed.emit("")
