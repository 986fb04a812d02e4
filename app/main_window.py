"""The main window: conversations | chat | document view, the memory strip below.

It talks to the engine only through `EngineBridge` (commands in, queued signals out) and never waits for it.
Runs are tracked by id: a load, a document prefill, an ask or a parameter change; each ends with one terminal event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, Signal, Slot
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.bridge import EngineBridge, WorkerFactory
from app.chat_view import ChatItem, ChatView
from app.document_view import DocumentView, LoadedDoc
from app.first_run import ModelChoice, first_run_choices
from app.local_server import LocalServer
from app.memory_panel import MemoryPanel
from app.settings import AppSettings, fitting_ctx, load_settings, migrate_settings, save_settings
from app.settings_dialog import SettingsDialog
from app.store import ConversationStore, Message, StoreError
from app.theme import RESOURCES, apply_theme
from app.widgets import Banner, ProgressBox
from engine import events as ev
from engine import paths
from engine.documents import SUPPORTED, Document, load_document
from engine.params import Policy, SkvParams
from engine.session import SessionConfig, TurnRecord
from engine.worker import Ask, LoadModel, OpenDocuments, SetParams

DOC_FILTER = (
    "Documents (*.txt *.md *.markdown *.pdf *.docx *.html *.htm *.epub);;Models (*.gguf);;All files (*)"
)
WELCOME = (
    "<div style='margin-top:40px'><h2>Chat with your documents</h2>"
    "<p>Drop a document anywhere in this window (or press <b>Ctrl+O</b>), then ask a question.</p>"
    "<p>The answer shows which sentences the model read for every word: click a word to see them in the document."
    "</p><p style='color:gray'>Ctrl+Enter sends · Esc stops · Ctrl+N starts a new chat · Ctrl+, opens settings</p>"
    "</div>"
)


def slice_document(doc: Document, offset: int) -> Document:
    """The part of doc from char offset on, keeping the anchor in effect there (for a chosen range)."""
    if offset <= 0:
        return doc
    anchors = [(max(0, a - offset), label) for a, label in doc.anchors if a >= offset]
    before = [label for a, label in doc.anchors if a < offset]
    if before and (not anchors or anchors[0][0] > 0):
        anchors.insert(0, (0, before[-1]))
    return Document.from_text(doc.name, doc.text[offset:], doc.path, tuple(anchors))


class MainWindow(QMainWindow):
    load_finished = Signal(bool)  # the model load ended: True when it is ready
    documents_finished = Signal(bool)  # a document prefill ended
    answer_finished = Signal(str)  # an answer ended (its text; "" when it failed)
    _model_resolved = Signal(
        str, str, int, str
    )  # path, error, n_ctx (0: the setting's), note (resolver thread)
    _documents_read = Signal(object, object)  # list[LoadedDoc], list[str] errors (from the reader thread)

    def __init__(
        self,
        model_path: str = "",
        max_tokens: int | None = None,
        bridge_factory: WorkerFactory | None = None,
        settings: AppSettings | None = None,
        data_dir: Path | None = None,
        ask_model: bool = True,
    ) -> None:
        """ask_model: on a first run with two built-in models installed, ask which one to load (not in a self-test)."""
        super().__init__()
        self.setWindowTitle("SentenceKV Desktop")
        self.setWindowIcon(QIcon(str(RESOURCES / "icons" / "sentencekv.svg")))
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        folder = data_dir or paths.data_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self._qsettings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
        first_run = ask_model and settings is None and not self._qsettings.allKeys() and not model_path
        settings_notice = migrate_settings(self._qsettings) if settings is None else None
        self.settings = settings or load_settings(self._qsettings)
        if max_tokens is not None:
            self.settings = replace(self.settings, max_tokens=max_tokens)
        self._model_override = model_path
        try:
            self.store = ConversationStore(folder)
            store_notice = self.store.notice
        except StoreError as e:  # locked by another program: keep this window's chats in memory
            self.store = ConversationStore(None)
            store_notice = str(e)
        self._unsaved: list[tuple[Callable, tuple]] = []  # chat-store writes that failed, retried in order
        self.colors: dict[str, str] = {}

        self._runs: dict[int, str] = {}  # run id -> "load" | "docs" | "ask" | "params"
        self._ask_run = 0
        self._load_submitted = False
        self.model_ready = False
        self.model_info: ev.ModelLoaded | None = None
        self._docs: list[LoadedDoc] = []
        self._docs_key = ""  # what the sentence ids refer to (stored with answers)
        self._pending_docs: list[LoadedDoc] | None = None
        self._conv_id = 0
        # chat id -> how many of its oldest turns left the context ("drop the oldest turns"; the history keeps them)
        self._dropped: dict[int, int] = {}
        self._asked = ""  # the question of the running ask (asked again when the oldest turns are dropped)
        self._turns_before = 0  # answered turns on screen before the running ask
        self._edit_from = -1  # chat item index of the question being edited (edit_question), -1: none
        self._stopped_asks: dict[int, tuple[int, ChatItem]] = {}  # run id -> (chat, answer) stopped on screen
        self._token_times: list[float] = []
        self._settings_dialog: SettingsDialog | None = None
        self.local_server = LocalServer(self)  # `skv serve`, started from Settings

        self._create_widgets()
        self._create_actions()
        self.bridge = EngineBridge(bridge_factory, self)
        self._connect_bridge()
        self._model_resolved.connect(self._submit_load)
        self._documents_read.connect(self._handle_documents_read)
        self.apply_theme()
        self._restore_conversations()
        if store_notice or settings_notice:
            self.banner.show_message(store_notice or settings_notice, "error" if store_notice else "warn")
        self.model_choice: ModelChoice | None = None
        choices = first_run_choices(self.settings.n_ctx, self.settings.threads) if first_run else []
        if choices:  # two built-in models and nothing saved yet: ask which one, then load it
            self.model_choice = ModelChoice(choices, self)
            self.model_choice.accepted.connect(self._first_model_chosen)
            self.model_choice.open()
        else:
            self.load_model()

    def _first_model_chosen(self) -> None:
        choice = self.model_choice.choice() if self.model_choice is not None else ""
        self.settings = replace(self.settings, model_path=choice)
        save_settings(self._qsettings, self.settings)
        self.load_model()

    # ================================================================== construction

    def _create_widgets(self) -> None:
        # left: conversations
        self.conv_list = QListWidget()
        self.conv_list.setAccessibleName("Conversations")
        self.conv_list.currentItemChanged.connect(self._conversation_chosen)
        self.conv_list.installEventFilter(self)
        self.conv_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conv_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        new_button = QPushButton("New chat")
        new_button.setAccessibleName("Start a new chat")
        new_button.clicked.connect(lambda: self.new_conversation())
        side = QWidget()
        side.setObjectName("sidebar")
        side_col = QVBoxLayout(side)
        side_col.setContentsMargins(10, 12, 10, 12)
        title = QLabel("Chats")
        title.setObjectName("paneTitle")
        side_col.addWidget(title)
        side_col.addWidget(new_button)
        side_col.addWidget(self.conv_list, 1)

        # middle: chat
        self.banner = Banner()
        self.progress = ProgressBox()
        self.progress.cancel_requested.connect(self.stop)
        self.chat = ChatView()
        self.chat.word_clicked.connect(self._word_clicked)
        self.chat.edit_requested.connect(self.edit_question)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setObjectName("promptEdit")
        self.prompt_edit.setAccessibleName("Question")
        self.prompt_edit.setPlaceholderText("Ask about the document…  (Ctrl+Enter to send)")
        self.prompt_edit.setFixedHeight(76)
        self.prompt_edit.setTabChangesFocus(True)
        self.open_button = self._button("Open…", "Open a document or a model", self.choose_files)
        self.copy_button = self._button("Copy", "Copy the last answer", self.copy_answer)
        self.regen_button = self._button("Regenerate", "Answer the last question again", self.regenerate)
        self.stop_button = self._button("Stop", "Stop (Esc)", self.stop)
        self.send_button = self._button("Send", "Send the question (Ctrl+Enter)", self.send)
        self.send_button.setObjectName("primary")
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        for b in (self.open_button, self.copy_button, self.regen_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.send_button)
        middle = QWidget()
        mid_col = QVBoxLayout(middle)
        mid_col.setContentsMargins(12, 12, 12, 12)
        mid_col.addWidget(self.banner)
        mid_col.addWidget(self.progress)
        mid_col.addWidget(self.chat, 1)
        mid_col.addWidget(self.prompt_edit)
        mid_col.addLayout(buttons)

        # right: document
        self.doc_view = DocumentView()
        self.doc_view.range_requested.connect(self.load_range)
        self.doc_view.turn_requested.connect(self._show_turn)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(side)
        split.addWidget(middle)
        split.addWidget(self.doc_view)
        split.setSizes([220, 560, 500])
        split.setChildrenCollapsible(False)
        self.memory = MemoryPanel()
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(split, 1)
        col.addWidget(self.memory)
        self.setCentralWidget(central)
        for w in (self.chat.viewport(), self.doc_view.text.viewport(), self.prompt_edit):
            w.setAcceptDrops(True)
            w.installEventFilter(self)

    def _button(self, text: str, name: str, slot) -> QPushButton:
        b = QPushButton(text)
        b.setAccessibleName(name)
        b.setToolTip(name)
        b.clicked.connect(slot)
        return b

    def _create_actions(self) -> None:
        menu = self.menuBar().addMenu("&File")
        for text, keys, slot in (
            ("&New chat", QKeySequence.StandardKey.New, self.new_conversation),
            ("&Open…", QKeySequence.StandardKey.Open, self.choose_files),
            ("Export as &Markdown…", None, lambda: self.export_conversation("md")),
            ("Export as &JSON…", None, lambda: self.export_conversation("json")),
            ("&Settings…", QKeySequence("Ctrl+,"), self.open_settings),
            ("&Quit", QKeySequence.StandardKey.Quit, self.close),
        ):
            action = QAction(text, self)
            if keys is not None:
                action.setShortcut(keys)
            action.triggered.connect(slot)
            menu.addAction(action)
        view = self.menuBar().addMenu("&View")
        mem = QAction("&Memory details", self)
        mem.setShortcut(QKeySequence("Ctrl+M"))
        mem.triggered.connect(lambda: self.memory.set_details_visible(not self.memory.details.isVisible()))
        view.addAction(mem)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.send)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    def _connect_bridge(self) -> None:
        b = self.bridge
        b.progress.connect(self._handle_progress)
        b.model_loaded.connect(self._handle_model_loaded)
        b.documents_loaded.connect(self._handle_documents_loaded)
        b.token.connect(self._handle_token)
        b.retrieval.connect(self._handle_retrieval)
        b.memory.connect(self.memory.update_memory)
        b.stats.connect(self._handle_stats)
        b.turn_ended.connect(self._handle_turn_ended)
        b.error.connect(self._handle_error)
        b.failed.connect(self._handle_failed)
        b.run_ended.connect(self._handle_run_ended)

    def apply_theme(self) -> None:
        app = QApplication.instance()
        self.colors = apply_theme(app, self.settings.theme)
        self.chat.set_colors(self.colors)
        self.chat.set_placeholder(WELCOME)
        self.doc_view.set_colors(self.colors)

    # ================================================================== model

    def load_model(self) -> None:
        """Resolve the model path (the default model may be assembled on first use: off the GUI thread). A model
        switch stops a running answer or prefill first: the user asked for the other model now."""
        if self._runs:
            self.stop()
        self.model_ready = False
        self._update_buttons()
        self.progress.show_busy("Loading the model…")
        path = self._model_override or self.settings.model_path
        from engine.models import builtin_key

        if builtin_key(path) is None:
            self._submit_load(path, "", 0, "")
            return
        n_ctx = self.settings.n_ctx

        def resolve() -> None:
            try:
                from engine.models import resolve_model

                resolved = str(resolve_model(path))
                fit, note = fitting_ctx(resolved, n_ctx)  # reads the GGUF header: off the GUI thread too
                self._model_resolved.emit(resolved, "", fit, note or "")
            except Exception as e:  # noqa: BLE001 - the thread edge: shown as one sentence
                self._model_resolved.emit(
                    "", f"the built-in model is not available ({e}): choose a GGUF file", 0, ""
                )

        threading.Thread(target=resolve, name="skv-model-resolve", daemon=True).start()

    @Slot(str, str, int, str)
    def _submit_load(self, path: str, error: str, n_ctx: int, note: str) -> None:
        """Load a resolved model; n_ctx (when not 0) and note: the built-in's context lowered to fit the memory."""
        if error:
            self.progress.hide()
            self.banner.show_message(error)
            self.load_finished.emit(False)
            return
        s = self.settings
        n_ctx = n_ctx or s.n_ctx
        if note:
            self.banner.show_message(note, "warn")
        try:
            skv = SkvParams(Policy.parse(s.policy), s.budget, s.sink, s.ring)
            config = SessionConfig(
                path,
                n_ctx=n_ctx,
                n_threads=s.threads,
                n_gpu_layers=s.gpu_layers,
                skv=skv,
                rpc=s.rpc_servers,
                rpc_allow_remote=bool(s.rpc_allow_remote),
            )
        except ValueError as e:
            self.progress.hide()
            self.banner.show_message(f"{e}: fix it in Settings (Ctrl+,)")
            self.load_finished.emit(False)
            return
        self._track(self.bridge.submit(LoadModel(config)), "load")
        self._load_submitted = True
        if self._docs:
            self._submit_documents()

    def _track(self, run_id: int, kind: str) -> int:
        if run_id == 0:
            self.banner.show_message("the engine has stopped: restart the app")
        else:
            self._runs[run_id] = kind
        return run_id

    # ================================================================== documents

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open documents or a model", "", DOC_FILTER)
        if files:
            self.open_paths(files)

    def open_paths(self, paths_in: list[str]) -> None:
        """Dropped or chosen files: a .gguf loads that model; the rest are read (off the GUI thread) and added."""
        models = [p for p in paths_in if p.lower().endswith(".gguf")]
        docs = [p for p in paths_in if not p.lower().endswith(".gguf")]
        if models:
            self._model_override = ""
            self.settings = replace(self.settings, model_path=models[-1])
            save_settings(self._qsettings, self.settings)
            self.load_model()
        if docs:
            self.read_documents(docs, keep=True)

    def read_documents(self, paths_in: list[str], keep: bool) -> None:
        current = [d for d in self._docs if keep and d.document.path not in paths_in]
        self.progress.show_busy("Reading " + ", ".join(Path(p).name for p in paths_in) + "…")

        def read() -> None:
            out, errors = [], []
            for p in paths_in:
                try:
                    out.append(LoadedDoc(load_document(p)))
                except Exception as e:  # noqa: BLE001 - the thread edge: shown as one sentence
                    errors.append(
                        str(e) if isinstance(e, ValueError) else f"{Path(p).name} could not be read ({e})"
                    )
            self._documents_read.emit(current + out, errors)

        threading.Thread(target=read, name="skv-read-documents", daemon=True).start()

    @Slot(object, object)
    def _handle_documents_read(self, docs: list[LoadedDoc], errors: list[str]) -> None:
        self.progress.hide()
        if errors:
            self.banner.show_message(errors[0])
        if not docs or docs == self._docs:
            return
        self._docs = docs
        self.doc_view.set_documents(docs)
        if self._conv_id:
            self._save(self.store.set_documents, self._conv_id, [d.document.path for d in docs])
        if self._load_submitted:
            self._submit_documents()

    def load_range(self, doc_index: int, offset: int) -> None:
        """Put the context's window at char offset of a document (the range chooser)."""
        if not 0 <= doc_index < len(self._docs):
            return
        self._docs[doc_index] = LoadedDoc(self._docs[doc_index].document, offset)
        self.doc_view.set_documents(self._docs)
        self._submit_documents()

    def _submit_documents(self) -> None:
        docs = tuple(slice_document(d.document, d.offset) for d in self._docs)
        self.doc_view.clear_heat()
        self.progress.show_progress("Reading the document…", 0, 1, -1.0)
        self._track(self.bridge.submit(OpenDocuments(docs, whole=True)), "docs")
        self._update_buttons()

    # ================================================================== asking

    def edit_question(self, item_index: int) -> None:
        """Put an earlier question back in the prompt box; sending it replaces that question and every message
        after it (the conversation is cut there and goes on from the edited question)."""
        if (
            self._ask_run
            or not 0 <= item_index < len(self.chat.items)
            or self.chat.items[item_index].role != "user"
        ):
            return
        self._edit_from = item_index
        self.prompt_edit.setPlainText(self.chat.items[item_index].text)
        self.prompt_edit.setFocus()
        later = len(self.chat.items) - item_index
        self.banner.show_message(
            f"editing an earlier question: Send replaces it and the {later - 1} message(s) after it",
            "info",
            actions=(("Cancel the edit", self._cancel_edit),),
        )

    def _cancel_edit(self) -> None:
        self._edit_from = -1
        self.prompt_edit.clear()

    def _cut_at_edit(self) -> bool:
        """Remove the edited question and everything after it, from the chat and the history."""
        i, self._edit_from = self._edit_from, -1
        if not 0 <= i < len(self.chat.items) or not self._flush_unsaved():
            return False
        msgs = self.store.messages(self._conv_id) if self._conv_id else []
        if len(msgs) != len(self.chat.items):
            return False  # the screen and the history disagree: ask as a new question instead
        for m in msgs[i:]:
            if not self._save(self.store.delete_message, m.id):
                return False
        while len(self.chat.items) > i:
            self.chat.remove_last()
        self.banner.hide()
        return True

    def send(self) -> None:
        question = self.prompt_edit.toPlainText().strip()
        if not question or not self.send_button.isEnabled():
            return
        if self._edit_from >= 0:
            self._cut_at_edit()
        self.prompt_edit.clear()
        if not self._conv_id and not self.new_conversation():
            self.prompt_edit.setPlainText(question)  # nothing is lost: the question stays to send again
            return
        conv = self.store.get(self._conv_id)
        if conv is not None and conv.title == "New chat":
            self._save(self.store.rename, conv.id, question[:60])
            self._refresh_conversation_list()
        self._save(self.store.add_message, self._conv_id, "user", question)
        self.chat.add_item(ChatItem("user", question))
        self._ask(question)

    def _ask(self, question: str, drop_oldest: bool = False) -> None:
        """Ask `question` after the chat's earlier turns (those still in the context): the engine keeps what it
        has of them and decodes the rest again (a reopened or switched chat, a regenerated answer)."""
        self.doc_view.clear_heat()
        self.chat.add_item(ChatItem("assistant"))
        self._token_times = []
        self._asked = question
        history = self._history()
        # on screen before this question: the dropped turns, then the history sent
        self._turns_before = self._dropped.get(self._conv_id, 0) + len(history)
        cmd = Ask(question, max_tokens=self.settings.max_tokens, history=history, drop_oldest=drop_oldest)
        self._ask_run = self._track(self.bridge.submit(cmd), "ask")
        self._update_buttons()

    def _turn_pairs(self) -> list[tuple[int, int]]:
        """(user item index, assistant item index) of every answered turn on screen, oldest first."""
        items = self.chat.items
        return [
            (i, i + 1)
            for i in range(len(items) - 1)
            if items[i].role == "user"
            and items[i + 1].role == "assistant"
            and (items[i + 1].text or items[i + 1].answer_ids)
        ]

    def _history(self) -> tuple[TurnRecord, ...]:
        """The turns before the question being asked (the last user message), minus those dropped from the
        context."""
        pairs = self._turn_pairs()
        recs = tuple(
            TurnRecord(
                self.chat.items[u].text,
                tuple(self.chat.items[a].answer_ids),
                self.chat.items[a].text,
                reason=self.chat.items[a].reason or "max_tokens",
            )
            for u, a in pairs
        )
        return recs[self._dropped.get(self._conv_id, 0) :]

    def _show_turn(self, turn: int, role: str) -> None:
        """Scroll the chat to an earlier turn's message (turn: counted in the context)."""
        pairs = self._turn_pairs()
        k = self._dropped.get(self._conv_id, 0) + turn - 1
        if 0 <= k < len(pairs):
            self.chat.scroll_to_item(pairs[k][0 if role == "user" else 1])

    def _drop_oldest_and_ask(self) -> None:
        """The question did not fit after the conversation: ask it again, the engine dropping the oldest turns
        from the context until it fits (the chat history keeps every message)."""
        if self._ask_run or not self._asked:
            return
        self._ask(self._asked, drop_oldest=True)

    def stop(self) -> None:
        """Stops prompt processing and answers at once; the UI is usable again right away."""
        if not self._runs:
            return
        self.bridge.stop()
        self.progress.hide()
        for rid, kind in list(self._runs.items()):
            if kind == "ask":
                self._finish_answer(rid, "stopped")
        self._update_buttons()

    def regenerate(self) -> None:
        if not self._flush_unsaved():  # the stored messages must match the screen
            return
        msgs = self.store.messages(self._conv_id) if self._conv_id else []
        if self._ask_run or not msgs:
            return
        if msgs[-1].role == "assistant":
            if not self._save(self.store.delete_message, msgs[-1].id):
                return
            self.chat.remove_last()
            msgs = msgs[:-1]
        if msgs and msgs[-1].role == "user":
            self._ask(msgs[-1].text)

    def copy_answer(self) -> None:
        answers = [i for i in self.chat.items if i.role == "assistant" and i.text]
        if answers:
            QGuiApplication.clipboard().setText(answers[-1].text)

    # ================================================================== engine events (GUI thread)

    @Slot(object)
    def _handle_progress(self, e: ev.ProgressEvent) -> None:
        if e.phase == "prefill":
            self.progress.show_progress("Reading the document…", e.done, e.total, e.eta_s)
            self.memory.show_prefill(e.done)
        elif e.phase == "replay" and e.done < e.total:
            self.progress.show_progress("Restoring the conversation…", e.done, e.total, e.eta_s)
        elif e.phase == "load" and e.done < e.total:
            self.progress.show_busy("Loading the model…")

    @Slot(object)
    def _handle_model_loaded(self, e: ev.ModelLoaded) -> None:
        self.model_info = e
        self.model_ready = True
        try:
            size = Path(e.path).stat().st_size
        except OSError:
            size = 0
        self.memory.set_model(e.name, size)
        self.memory.show_context(0, e.n_ctx)
        if not e.skv_enabled:
            self.banner.show_message("this model runs without SentenceKV: retrieval is not shown", "warn")

    @Slot(object)
    def _handle_documents_loaded(self, e: ev.DocumentsLoaded) -> None:
        self.doc_view.set_loaded(e.sentences, e.n_tokens_loaded, e.n_tokens_total, e.truncated)
        if e.prefill_s > 0 and not e.restored:
            self.memory.set_prefill_speed(e.n_tokens_loaded / e.prefill_s)
        if e.restored:
            self.banner.show_message(
                f"opened {', '.join(e.names)} from its saved session in {e.prefill_s:.1f} s: no reading needed",
                "info",
            )
        trained = self.model_info.n_ctx_train if self.model_info else 0
        if not e.restored and not e.truncated and 0 < trained < e.n_tokens_loaded:
            self.banner.show_message(
                f"{e.n_tokens_loaded:,} tokens loaded — beyond the model's {trained:,}: positions remapped",
                "info",
            )
        model = self.model_info.path if self.model_info else ""
        self._docs_key = f"{model}|{e.names}|{e.n_tokens_loaded}|{[d.offset for d in self._docs]}"

    @Slot(object)
    def _handle_token(self, e: ev.TokenEvent) -> None:
        if e.run_id != self._ask_run or not self.chat.items:
            return
        import time

        self._token_times.append(time.perf_counter())
        self.chat.append_token(e.text)
        if len(self._token_times) >= 2 and len(self._token_times) % 4 == 0:
            window = self._token_times[-16:]
            if window[-1] > window[0]:
                self.memory.set_live_speed((len(window) - 1) / (window[-1] - window[0]))

    @Slot(object)
    def _handle_retrieval(self, e: ev.RetrievalEvent) -> None:
        if e.run_id != self._ask_run or not self.chat.items:
            return
        self.chat.items[-1].steps[e.index] = e.sentences
        if e.layers:
            self.chat.items[-1].layer_steps[e.index] = e.layers
        self.doc_view.add_retrieval(e.sentences)

    @Slot(object)
    def _handle_stats(self, e: ev.StatsEvent) -> None:
        self.memory.update_stats(e)
        if e.run_id == self._ask_run and self.chat.items:
            self.chat.items[-1].footer = f"{e.decode_tok_s:.1f} tok/s · first token after {e.ttft_s:.2f} s"

    @Slot(object)
    def _handle_error(self, e: ev.ErrorEvent) -> None:
        if self._runs.get(e.run_id) == "docs":
            return  # truncation: the document view's banner says it, with the range chooser
        self.banner.show_message(e.message, "warn")

    @Slot(object)
    def _handle_failed(self, e: ev.Failed) -> None:
        if e.kind == "context_full":
            self.banner.show_message(
                e.message,
                "warn",
                actions=(
                    ("Drop the oldest turns", self._drop_oldest_and_ask),
                    ("New chat", self.new_conversation),
                    ("Settings…", self.open_settings),
                ),
            )
            return
        self.banner.show_message(e.message)

    @Slot(object)
    def _handle_turn_ended(self, e: ev.TurnEnded) -> None:
        late = self._stopped_asks.pop(e.run_id, None)
        if late is not None:
            # stopped on screen before the engine ended the turn: the saved answer gets what the context holds
            conv_id, item = late
            item.answer_ids, item.reason = list(e.answer_tokens), "stopped"
            msgs = self.store.messages(conv_id)
            if msgs and msgs[-1].role == "assistant" and msgs[-1].text == item.text:
                meta = {**msgs[-1].meta, "answer_ids": item.answer_ids, "reason": "stopped"}
                self._save(self.store.update_message, msgs[-1].id, item.text, meta)
            self.doc_view.set_turn_entries(e.entries)
            return
        if e.run_id != self._ask_run or not self.chat.items:
            return
        item = self.chat.items[-1]
        item.answer_ids = list(e.answer_tokens)
        item.reason = e.reason
        self._dropped[self._conv_id] = max(
            0, self._turns_before - (e.turn - 1)
        )  # the engine may have dropped some
        self.doc_view.set_turn_entries(e.entries)

    @Slot(object)
    def _handle_run_ended(self, e: ev.Event) -> None:
        kind = self._runs.pop(e.run_id, None)
        ok = isinstance(e, ev.Finished)
        self._update_buttons()  # before the signals: their receivers may act at once (send, open)
        if kind == "load":
            self.progress.hide()
            self.load_finished.emit(ok)
        elif kind == "docs":
            self.progress.hide()
            self.documents_finished.emit(ok)
        elif kind == "ask":
            self._finish_answer(e.run_id, e.reason if isinstance(e, ev.Finished | ev.Stopped) else "failed")
        if not any(k in ("load", "docs") for k in self._runs.values()):
            self.progress.hide()
        self._update_buttons()

    def _finish_answer(self, run_id: int, reason: str) -> None:
        if run_id != self._ask_run or not self.chat.items:
            return
        self._ask_run = 0
        self._runs.pop(run_id, None)
        item = self.chat.items[-1]
        if reason.startswith("stopped") and not item.answer_ids:
            self._stopped_asks[run_id] = (self._conv_id, item)  # its TurnEnded may still come
        footer = item.footer
        if reason == "stopped" or reason.startswith("stopped"):
            footer = (footer + " · stopped") if footer else "stopped"
        self.chat.finish_last(footer)
        self.doc_view.show_answer_sentences()
        if item.text or reason != "failed":
            top = []
            for sid, w in self.doc_view.top_sentences(10):
                name, place, text = self.doc_view.location(sid)
                top.append({"doc": name, "location": place, "text": text, "weight": round(w, 4)})
            meta = {
                "tokens": item.token_starts,
                "steps": {str(k): [[s, round(w, 4)] for s, w in v] for k, v in item.steps.items()},
                "layers": {
                    str(k): [[lid, [[s, round(w, 4)] for s, w in picks]] for lid, picks in v]
                    for k, v in item.layer_steps.items()
                },
                "docs_key": self._docs_key,
                "top": top,
                "footer": footer,
                "answer_ids": item.answer_ids,  # the decoded answer: the context is rebuilt from it exactly
                "reason": item.reason or reason,
            }
            if self._conv_id:
                self._save(self.store.add_message, self._conv_id, "assistant", item.text, meta)
        else:
            self.chat.remove_last()
        self._update_buttons()
        self.answer_finished.emit(item.text)

    def _word_clicked(self, item_index: int, token_index: int) -> None:
        item = self.chat.items[item_index]
        steps = item.steps.get(token_index)
        start = item.token_starts[token_index]
        end = (
            item.token_starts[token_index + 1] if token_index + 1 < len(item.token_starts) else len(item.text)
        )
        if not steps:
            self.banner.show_message(
                "no retrieval was recorded for this word (the full policy, or the documents changed since)",
                "info",
            )
            return
        self.doc_view.show_step(item.text[start:end], steps, item.layer_steps.get(token_index, ()))

    def _update_buttons(self) -> None:
        busy_ask = bool(self._ask_run)
        self.send_button.setEnabled(self.model_ready and not busy_ask)
        self.stop_button.setEnabled(bool(self._runs))
        self.regen_button.setEnabled(self.model_ready and not busy_ask and bool(self._conv_id))
        self.copy_button.setEnabled(any(i.role == "assistant" and i.text for i in self.chat.items))

    # ================================================================== conversations

    def _restore_conversations(self) -> None:
        self._refresh_conversation_list()
        if self.conv_list.count():
            self.conv_list.setCurrentRow(0)

    def _refresh_conversation_list(self) -> None:
        self.conv_list.blockSignals(True)
        self.conv_list.clear()
        for c in self.store.conversations():
            item = QListWidgetItem(c.title)
            item.setData(Qt.ItemDataRole.UserRole, c.id)
            item.setToolTip(c.title)
            self.conv_list.addItem(item)
            if c.id == self._conv_id:
                self.conv_list.setCurrentItem(item)
        self.conv_list.blockSignals(False)

    def new_conversation(self) -> bool:
        if not self._flush_unsaved():
            return False
        try:
            conv = self.store.create("New chat", [d.document.path for d in self._docs])
        except StoreError as e:
            self.banner.show_message(str(e))
            return False
        self._conv_id = conv.id
        self._refresh_conversation_list()
        self.chat.clear_items()
        self.doc_view.clear_heat()
        self.prompt_edit.setFocus()
        self._update_buttons()
        return True

    def _save(self, write: Callable, *args) -> bool:
        """A chat-store write, after the earlier ones that failed; a failure keeps it queued and shows why."""
        self._unsaved.append((write, args))
        return self._flush_unsaved()

    def _flush_unsaved(self) -> bool:
        while self._unsaved:
            write, args = self._unsaved[0]
            try:
                write(*args)
            except StoreError as e:
                self.banner.show_message(str(e))
                return False
            self._unsaved.pop(0)
        return True

    def _conversation_chosen(self, current: QListWidgetItem | None, _prev=None) -> None:
        if current is None:
            return
        conv = self.store.get(int(current.data(Qt.ItemDataRole.UserRole)))
        if conv is None:
            return
        self._conv_id = conv.id
        self._edit_from = -1
        self.chat.items = []
        for m in self.store.messages(conv.id):
            self.chat.items.append(self._item_from_message(m))
        self.chat.rebuild()
        self.doc_view.clear_heat()
        if conv.documents and conv.documents != [d.document.path for d in self._docs]:
            existing = [p for p in conv.documents if Path(p).exists()]
            if existing:
                self.read_documents(existing, keep=False)
        self._update_buttons()

    def _item_from_message(self, m: Message) -> ChatItem:
        item = ChatItem(m.role, m.text, footer=m.meta.get("footer", ""))
        item.token_starts = list(m.meta.get("tokens", []))
        item.answer_ids = [int(t) for t in m.meta.get("answer_ids", [])]
        item.reason = str(m.meta.get("reason", ""))
        if m.meta.get("docs_key") and m.meta.get("docs_key") == self._docs_key:
            item.steps = {int(k): tuple((int(s), float(w)) for s, w in v) for k, v in m.meta["steps"].items()}
            item.layer_steps = {
                int(k): tuple((int(lid), tuple((int(s), float(w)) for s, w in picks)) for lid, picks in v)
                for k, v in m.meta.get("layers", {}).items()
            }
        return item

    def export_conversation(self, kind: str) -> None:
        from PySide6.QtCore import QSaveFile

        from app.store import export_json, export_markdown

        conv = self.store.get(self._conv_id) if self._conv_id else None
        if conv is None:
            self.banner.show_message("there is no conversation to export: ask a question first", "info")
            return
        suffix = ".md" if kind == "md" else ".json"
        path, _ = QFileDialog.getSaveFileName(self, "Export the conversation", conv.title[:40] + suffix)
        if not path:
            return
        messages = self.store.messages(conv.id)
        text = export_markdown(conv, messages) if kind == "md" else export_json(conv, messages)
        f = QSaveFile(path)
        if (
            not f.open(QSaveFile.OpenModeFlag.WriteOnly)
            or f.write(text.encode("utf-8")) < 0
            or not f.commit()
        ):
            self.banner.show_message(
                f"the conversation could not be saved ({f.errorString()}): choose another folder"
            )

    # ================================================================== settings

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.settings, self, self.local_server)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.value()))
        self._settings_dialog = dialog
        dialog.open()
        return dialog

    def apply_settings(self, new: AppSettings) -> None:
        old, self.settings = self.settings, new
        save_settings(self._qsettings, new)
        if new.theme != old.theme:
            self.apply_theme()
        if new.needs_reload(old):
            self._model_override = ""
            self.load_model()
        elif new.params_differ(old) and self.model_ready:
            try:
                params = SkvParams(Policy.parse(new.policy), new.budget, new.sink, new.ring)
            except ValueError as e:
                self.banner.show_message(str(e))
                return
            self._track(self.bridge.submit(SetParams(params)), "params")

    # ================================================================== window

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:  # noqa: N802 - Qt override
        t = e.type()
        if t in (QEvent.Type.DragEnter, QEvent.Type.DragMove) and e.mimeData().hasUrls():
            e.acceptProposedAction()
            return True
        if t == QEvent.Type.Drop and e.mimeData().hasUrls():
            self.dropEvent(e)
            return True
        if obj is self.conv_list and t == QEvent.Type.KeyPress and e.key() == Qt.Key.Key_Delete:
            self.delete_conversation()
            return True
        return super().eventFilter(obj, e)

    def dragEnterEvent(self, e) -> None:  # noqa: N802 - Qt override
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802 - Qt override
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if files:
            e.acceptProposedAction()
            self.open_paths(files)
        else:
            self.banner.show_message(
                f"only local files can be opened: drop a {SUPPORTED} file or a .gguf model"
            )

    def delete_conversation(self) -> None:
        if not self._conv_id or not self._flush_unsaved():
            return
        try:
            self.store.delete(self._conv_id)
        except StoreError as e:
            self.banner.show_message(str(e))
            return
        self._conv_id = 0
        self.chat.clear_items()
        self._refresh_conversation_list()
        if self.conv_list.count():
            self.conv_list.setCurrentRow(0)

    def output_text(self) -> str:
        return self.chat.toPlainText().strip()

    def status_text(self) -> str:
        return self.banner.text() or self.progress.label.text()

    def shutdown(self) -> None:
        """Stop the engine, free the model and join its thread, then save what the chat store still owes
        (idempotent)."""
        self.bridge.shutdown(10.0)
        self.local_server.stop()
        self._flush_unsaved()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
