"""The Settings dialog (model, context, retrieval, appearance, RPC servers, the local server) and the Hugging Face
download it runs."""

from __future__ import annotations

import threading
from dataclasses import replace

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.local_server import LocalServer
from app.settings import POLICIES, THEMES, AppSettings, builtin_choices, builtin_setting_key


class ModelDownload(QObject):
    """A Hugging Face download on its own thread (engine.models.download_model: resumable, verified); signals are
    delivered on the GUI thread. One at a time; `stop()` keeps the partial file for a later resume."""

    progress = Signal(int, int)  # bytes done, bytes total (0 while unknown)
    finished = Signal(str)  # the model file
    failed = Signal(str)  # one sentence

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, repo: str, filename: str) -> None:
        if self.running:
            return
        self._stop.clear()

        def run() -> None:
            from engine.models import DownloadCancelled, ModelError, download_model

            try:
                path = download_model(
                    repo.strip(),
                    filename.strip(),
                    on_progress=self.progress.emit,
                    should_stop=self._stop.is_set,
                )
            except DownloadCancelled:
                self.failed.emit("the download was stopped: start it again to resume where it stopped")
            except (ModelError, ValueError) as e:
                self.failed.emit(str(e))
            except Exception as e:  # noqa: BLE001 - the thread edge: one sentence for the user
                self.failed.emit(f"the download failed ({type(e).__name__}: {e})")
            else:
                self.finished.emit(str(path))

        self._thread = threading.Thread(target=run, name="skv-model-download", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class SettingsDialog(QDialog):
    def __init__(
        self, current: AppSettings, parent: QWidget | None = None, server: LocalServer | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.setAccessibleName("Settings")
        self.setMinimumWidth(600)
        self._current = current

        self.model_edit = QLineEdit(current.model_path)
        self.model_edit.setPlaceholderText("Built-in: Qwen2.5-Coder-0.5B-Instruct")
        self.model_edit.setAccessibleName("Model file")
        browse = QPushButton("Browse…")
        browse.setAccessibleName("Choose a model file")
        browse.clicked.connect(self._browse)
        default = QPushButton("Default")
        default.setAccessibleName("Use the built-in model")
        default.clicked.connect(lambda: self.model_edit.setText(""))
        # the built-in models whose parts are installed, with their memory estimate at the current context
        self.builtin = QComboBox()
        self.builtin.setAccessibleName("Built-in model")
        self.builtin.addItem("— a model file —", "")
        for key, label in builtin_choices(current.n_ctx, current.threads):
            self.builtin.addItem(label, key)
        chosen = self.builtin.findData(builtin_setting_key(current.model_path))
        self.builtin.setCurrentIndex(max(0, chosen))
        self.builtin.activated.connect(self._builtin_chosen)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)
        model_row.addWidget(default)

        # Hugging Face: OWNER/NAME + file, downloaded into the models folder, then chosen as the model
        self.hf_repo = QLineEdit()
        self.hf_repo.setPlaceholderText("owner/name")
        self.hf_repo.setToolTip("A Hugging Face repository, e.g. unsloth/gemma-3-1b-it-GGUF")
        self.hf_repo.setAccessibleName("Hugging Face repository")
        self.hf_file = QLineEdit()
        self.hf_file.setPlaceholderText("file.gguf")
        self.hf_file.setToolTip("A GGUF file in that repository, e.g. gemma-3-1b-it-Q4_K_M.gguf")
        self.hf_file.setAccessibleName("File in the repository")
        self.hf_button = QPushButton("Download")
        self.hf_button.setAccessibleName("Download the model from Hugging Face")
        self.hf_button.clicked.connect(self._download)
        self.hf_progress = QProgressBar()
        self.hf_progress.setAccessibleName("Download progress")
        self.hf_progress.setTextVisible(True)
        self.hf_progress.hide()
        hf_row = QHBoxLayout()
        hf_row.addWidget(self.hf_repo, 2)
        hf_row.addWidget(self.hf_file, 2)
        hf_row.addWidget(self.hf_button)
        self.download = ModelDownload(self)
        self.download.progress.connect(self._download_progress)
        self.download.finished.connect(self._download_finished)
        self.download.failed.connect(self._download_failed)

        self.n_ctx = self._spin(256, 1 << 20, current.n_ctx, "Context size in tokens", step=1024)
        self.threads = self._spin(1, 256, current.threads, "CPU threads")
        self.gpu_layers = self._spin(0, 999, current.gpu_layers, "Layers offloaded to the GPU")
        self.rpc = QLineEdit(current.rpc)
        self.rpc.setPlaceholderText("none (HOST:PORT,… of skv rpc-server)")
        self.rpc.setAccessibleName("RPC servers")
        self.rpc_remote = QCheckBox("Allow servers on other machines (unencrypted)")
        self.rpc_remote.setChecked(bool(current.rpc_allow_remote))
        self.rpc_remote.setAccessibleName("Allow RPC servers on other machines")
        self.policy = QComboBox()
        self.policy.addItems(
            ["sentence (SentenceKV)", "chunk (fixed chunks)", "window (sink + recent)", "full"]
        )
        self.policy.setCurrentIndex(POLICIES.index(current.policy))
        self.policy.setAccessibleName("Attention policy")
        self.budget = self._spin(2, 1 << 20, current.budget, "Token budget per step", step=128)
        self.sink = self._spin(0, 4096, current.sink, "Sink tokens")
        self.ring = self._spin(1, 4096, current.ring, "Recent tokens")
        self.max_tokens = self._spin(1, 8192, current.max_tokens, "Longest answer in tokens", step=64)
        self.theme = QComboBox()
        self.theme.addItems(["Follow the system", "Light", "Dark"])
        self.theme.setCurrentIndex(THEMES.index(current.theme))
        self.theme.setAccessibleName("Theme")

        form = QFormLayout()
        form.setSpacing(10)
        form.addRow(self._section("Model"))
        form.addRow("Built-in model", self.builtin)
        form.addRow("Model file", model_row)
        form.addRow("Hugging Face", hf_row)
        form.addRow("", self.hf_progress)
        form.addRow("Context (tokens)", self.n_ctx)
        form.addRow("Threads", self.threads)
        form.addRow("GPU layers", self.gpu_layers)
        form.addRow("RPC servers", self.rpc)
        form.addRow("", self.rpc_remote)
        form.addRow(self._section("Retrieval (applies at once)"))
        form.addRow("Policy", self.policy)
        form.addRow("Budget (tokens)", self.budget)
        form.addRow("Sink", self.sink)
        form.addRow("Recent", self.ring)
        form.addRow("Answer length", self.max_tokens)
        form.addRow(self._section("Appearance"))
        form.addRow("Theme", self.theme)
        if server is not None:  # an OpenAI-compatible server on these settings (README, "Server")
            self.server_button = QPushButton()
            self.server_button.setAccessibleName("Start or stop the local server")
            self.server_label = QLabel()
            self.server_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

            def show(address: str) -> None:
                self.server_button.setText("Stop server" if server.running else "Start server")
                self.server_label.setText(address or ("starting…" if server.running else "not running"))

            self.server_button.clicked.connect(
                lambda: (server.stop() if server.running else server.start(current), show(server.address))
            )
            server.changed.connect(show)
            show(server.address)
            server_row = QHBoxLayout()
            server_row.addWidget(self.server_button)
            server_row.addWidget(self.server_label, 1)
            form.addRow(self._section("Server"))
            form.addRow("OpenAI API", server_row)

        self.error_label = QLabel()
        self.error_label.setObjectName("errorText")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.note = QLabel(
            "Changing the model, context, threads, GPU layers or RPC servers reloads the model."
        )
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        self.rejected.connect(self.download.stop)  # closing the dialog stops a download (it resumes later)
        self.buttons = buttons

        col = QVBoxLayout(self)
        col.setContentsMargins(20, 20, 20, 16)
        col.addLayout(form)
        col.addWidget(self.note)
        col.addWidget(self.error_label)
        col.addWidget(buttons)

    @staticmethod
    def _section(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("sectionTitle")
        return label

    @staticmethod
    def _spin(lo: int, hi: int, value: int, name: str, step: int = 1) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(lo, hi)
        spin.setValue(value)
        spin.setSingleStep(step)
        spin.setAccessibleName(name)
        return spin

    def _builtin_chosen(self, index: int) -> None:
        key = self.builtin.itemData(index)
        if key:
            from engine.models import BUILTIN_PREFIX, DEFAULT_MODEL

            self.model_edit.setText("" if key == DEFAULT_MODEL else BUILTIN_PREFIX + key)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", "", "GGUF models (*.gguf)")
        if path:
            self.model_edit.setText(path)

    def _download(self) -> None:
        if self.download.running:  # the button reads "Stop" while downloading
            self.download.stop()
            return
        repo, name = self.hf_repo.text().strip(), self.hf_file.text().strip()
        if not repo or not name:
            self._show_error("Give a Hugging Face repository (owner/name) and a .gguf file in it.")
            return
        self.error_label.hide()
        self.hf_progress.setRange(0, 0)  # busy until the size is known
        self.hf_progress.show()
        self.hf_button.setText("Stop")
        self.download.start(repo, name)

    def _download_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.hf_progress.setRange(0, 1000)
            self.hf_progress.setValue(int(1000 * done / total))
            self.hf_progress.setFormat(f"{done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    def _download_finished(self, path: str) -> None:
        self.hf_button.setText("Download")
        self.hf_progress.setRange(0, 1000)
        self.hf_progress.setValue(1000)
        self.hf_progress.setFormat("Downloaded")
        self.model_edit.setText(path)

    def _download_failed(self, message: str) -> None:
        self.hf_button.setText("Download")
        self.hf_progress.hide()
        self._show_error(message[0].upper() + message[1:] + ("" if message.endswith(".") else "."))

    def _show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.show()

    def value(self) -> AppSettings:
        """The settings in the dialog; raises ValueError with a clear message when they do not fit together."""
        return replace(
            self._current,
            model_path=self.model_edit.text().strip(),
            n_ctx=self.n_ctx.value(),
            threads=self.threads.value(),
            gpu_layers=self.gpu_layers.value(),
            policy=POLICIES[self.policy.currentIndex()],
            budget=self.budget.value(),
            sink=self.sink.value(),
            ring=self.ring.value(),
            max_tokens=self.max_tokens.value(),
            theme=THEMES[self.theme.currentIndex()],
            rpc=self.rpc.text().strip(),
            rpc_allow_remote=int(self.rpc_remote.isChecked()),
        )

    def _accept(self) -> None:
        try:
            self.value()
        except ValueError as e:
            self.error_label.setText(str(e)[0].upper() + str(e)[1:] + ".")
            self.error_label.show()
            return
        self.accept()
