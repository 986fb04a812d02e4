"""UI behaviour on a scripted engine (tests/support/fake_worker.py): fast, no model. The real engine runs in test_app_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui import SAMPLE, ask, open_sample

pytestmark = pytest.mark.timeout(120)


def test_bridge_delivers_worker_thread_events_on_the_gui_thread(qtbot):
    import threading

    from app.bridge import EngineBridge
    from engine import events as ev

    class Silent:
        def __init__(self, on_event):
            self.on_event = on_event

        def submit(self, cmd):
            return 1

        def stop(self):
            pass

        def shutdown(self, timeout=10.0):
            return True

    bridge = EngineBridge(lambda on_event: Silent(on_event))
    seen = []
    bridge.token.connect(lambda e: seen.append((e, threading.current_thread() is threading.main_thread())))
    t = threading.Thread(target=lambda: bridge.dispatch(ev.TokenEvent(1, 0, "hi", 5)))
    t.start()
    t.join()
    assert seen == []  # queued, not called on the worker thread
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=2000)
    assert seen[0] == (ev.TokenEvent(1, 0, "hi", 5), True)


def test_answer_streams_as_markdown_and_shades_retrieved_sentences(qtbot, make_window):
    w = make_window()
    open_sample(qtbot, w)
    assert "Eastwick" in w.doc_view.text.toPlainText()
    answer = ask(qtbot, w)
    assert answer.startswith("The pass code is **granite-1851**.")
    assert "**" not in w.output_text()  # rendered as Markdown
    assert "granite-1851" in w.output_text()
    assert w.doc_view.heat and w.doc_view.top_list.count() > 0
    assert "tok/s" in w.chat.items[-1].footer


def test_clicking_a_word_lists_and_scrolls_to_its_sentences(qtbot, make_window):
    w = make_window()
    open_sample(qtbot, w)
    ask(qtbot, w)
    item = w.chat.items[-1]
    text = w.output_text()
    pos = text.index("granite")
    w.chat.click_position(pos + 2)
    assert w.doc_view.focus, "the step's sentences are marked"
    assert w.doc_view.list_title.text().startswith("Sentences read to write")
    sid = sorted(w.doc_view.focus, key=lambda kv: (-kv[1], kv[0]))[0][0]
    start = w.doc_view.map.sentences[sid][1]
    assert w.doc_view.text.textCursor().position() == start
    # the token under the click is one of the answer's tokens around "granite"
    i, t = w.chat.token_at_position(pos + 2)
    assert "gran" in item.text[item.token_starts[t] : item.token_starts[t] + 8] or t in (4, 5, 6)
    # per layer: the chooser lists the SKV layers; one layer shows only its own sentences
    choice = w.doc_view.layer_choice
    assert choice.isVisible() and [choice.itemText(k) for k in range(choice.count())] == [
        "All layers",
        "Layer 5",
        "Layer 11",
        "Layer 17",
    ]
    merged = {s for s, _ in w.doc_view.focus}
    layers = dict(item.layer_steps[t])
    choice.setCurrentIndex(2)
    assert {s for s, _ in w.doc_view.focus} == {s for s, _ in layers[11]} < merged
    choice.setCurrentIndex(0)
    assert {s for s, _ in w.doc_view.focus} == merged
    w.doc_view.back_button.click()
    assert not choice.isVisible() and not w.doc_view.focus


def test_stop_during_decode_returns_control_at_once(qtbot, make_window):
    import time

    w = make_window(token_delay=0.2)
    w.prompt_edit.setPlainText("Tell me everything")
    w.send()
    qtbot.waitUntil(lambda: len(w.chat.items[-1].text) > 0, timeout=5000)
    t0 = time.perf_counter()
    w.stop()
    assert w.send_button.isEnabled()
    assert time.perf_counter() - t0 < 0.5
    assert w.chat.items[-1].footer.endswith("stopped")


def test_truncated_document_shows_the_banner_and_loads_a_chosen_range(qtbot, make_window, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(
        " ".join(f"Line {i} of the long book tells a story." for i in range(3000)), encoding="utf-8"
    )
    w = make_window()
    with qtbot.waitSignal(w.documents_finished, timeout=10_000):
        w.open_paths([str(book)])
    assert w.doc_view.banner.isVisible()
    assert "tokens in context" in w.doc_view.banner.text()
    cur = w.doc_view.text.textCursor()
    cur.setPosition(60_000)
    w.doc_view.text.setTextCursor(cur)
    with qtbot.waitSignal(w.documents_finished, timeout=10_000):
        w.doc_view.range_button.click()
    assert w._docs[0].offset > 50_000
    first = min(s for _, s, _ in w.doc_view.map.sentences.values())
    assert first >= w.doc_view.map.bases[0] + w._docs[0].offset


def test_a_book_past_the_trained_length_loads_whole_with_a_banner(qtbot, tmp_path):
    from fake_worker import FakeWorker

    from app.main_window import MainWindow
    from app.settings import AppSettings

    def factory(on_event):
        f = FakeWorker(on_event, token_delay=0.002)
        f.whole_books = True
        return f

    book = tmp_path / "book.txt"
    book.write_text(
        " ".join(f"Line {i} of the long book tells a story." for i in range(4000)), encoding="utf-8"
    )
    w = MainWindow(
        model_path="/models/fake-model.gguf",
        bridge_factory=factory,
        settings=AppSettings(),
        data_dir=tmp_path / "data",
    )
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=5000)
    with qtbot.waitSignal(w.documents_finished, timeout=10_000):
        w.open_paths([str(book)])
    # loaded whole: no range chooser; the window's banner says it went past the trained length
    assert not w.doc_view.banner.isVisible()
    assert w.banner.isVisible() and "beyond the model's 32,768: positions remapped" in w.banner.text()
    assert "tokens loaded" in w.banner.text()
    assert w.model_info.n_ctx > 40_000
    w.shutdown()


def test_conversation_survives_a_restart(qtbot, make_window, tmp_path):
    data = tmp_path / "shared-data"
    w = make_window(data_dir=data)
    open_sample(qtbot, w)
    ask(qtbot, w, "Where is the library?")
    w.close()
    w2 = make_window(data_dir=data)
    assert w2.conv_list.count() == 1
    assert w2.conv_list.item(0).text() == "Where is the library?"
    assert "Where is the library?" in w2.output_text()
    assert "granite-1851" in w2.output_text()


def test_dropping_a_gguf_loads_that_model_and_errors_show_one_sentence(qtbot, make_window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    w = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "other.gguf"))])
    drop = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(w.load_finished, timeout=5000):
        w.dropEvent(drop)
    assert w.settings.model_path.endswith("other.gguf")
    assert w.model_info.name == "other.gguf"
    w.open_paths([str(tmp_path / "missing.txt")])
    qtbot.waitUntil(lambda: w.banner.isVisible(), timeout=5000)
    assert "Traceback" not in w.banner.text() and w.banner.text().endswith(".")


def test_settings_apply_params_without_reload_and_theme_at_once(qtbot, make_window):
    from dataclasses import replace

    from engine.worker import LoadModel, SetParams

    w = make_window()
    fake = w.bridge._worker
    n_loads = sum(isinstance(c, LoadModel) for c in fake.commands)
    w.apply_settings(replace(w.settings, budget=512, policy="window", theme="dark"))
    qtbot.waitUntil(lambda: any(isinstance(c, SetParams) for c in fake.commands), timeout=2000)
    assert sum(isinstance(c, LoadModel) for c in fake.commands) == n_loads
    assert w.colors["window"] == "#1b1e24"
    w.apply_settings(replace(w.settings, n_ctx=2048))
    qtbot.waitUntil(lambda: sum(isinstance(c, LoadModel) for c in fake.commands) == n_loads + 1, timeout=2000)


def test_every_control_has_an_accessible_name(qtbot, make_window):
    from PySide6.QtWidgets import QAbstractButton, QAbstractScrollArea, QComboBox, QLineEdit, QSpinBox

    w = make_window()
    dialog = w.open_settings()
    for root in (w, dialog):
        for cls in (QAbstractButton, QComboBox, QLineEdit, QSpinBox, QAbstractScrollArea):
            for c in root.findChildren(cls):
                if (
                    c.isVisibleTo(root)
                    and c.parent() is not None
                    and c.objectName() != "qt_scrollarea_viewport"
                ):
                    assert c.accessibleName() or c.text() if hasattr(c, "text") else c.accessibleName(), c
    dialog.reject()


def test_export_writes_markdown_and_json(tmp_path):
    import json

    from app.store import ConversationStore, export_json, export_markdown

    store = ConversationStore(tmp_path)
    conv = store.create("Harbour", ["/docs/sample.md"])
    store.add_message(conv.id, "user", "When was the light first lit?")
    store.add_message(
        conv.id,
        "assistant",
        "On 3 March 1851.",
        {"top": [{"doc": "sample.md", "location": "line 9", "text": "The lighthouse…", "weight": 0.4}]},
    )
    md = export_markdown(conv, store.messages(conv.id))
    assert "**You:**" in md and "line 9" in md
    data = json.loads(export_json(conv, store.messages(conv.id)))
    assert data["messages"][1]["sources"][0]["location"] == "line 9"
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_send_right_after_the_model_loads_is_answered(qtbot, make_window):
    """--selftest sends from the load_finished handler: the Send button must already be enabled then."""
    w = make_window()
    w.apply_settings(w.settings.__class__(n_ctx=2048))
    sent = []

    def on_loaded(ok):
        w.prompt_edit.setPlainText("Hello <b>there</b>")
        w.send()
        sent.append(bool(w._ask_run))

    w.load_finished.connect(on_loaded)
    with qtbot.waitSignal(w.answer_finished, timeout=10_000):
        qtbot.waitUntil(lambda: bool(sent), timeout=5000)
    assert sent == [True]
    assert "Hello <b>there</b>" in w.output_text()  # HTML in a message stays text


def test_a_150k_token_book_stays_smooth(qtbot, tmp_path):
    """walden (~150k tokens, ~10k sentences) whole in the document view: loading it, shading retrieved sentences
    while 300 tokens stream, jumping to a sentence near the end and painting never block the event loop 100 ms."""
    from event_loop import EventLoopWatch
    from fake_worker import FakeWorker

    from app.main_window import MainWindow
    from app.settings import AppSettings
    from engine.bench.report import books_dir

    w = MainWindow(
        model_path="/models/fake-model.gguf",
        bridge_factory=lambda on_event: FakeWorker(
            on_event, token_delay=0.002, answer=[" word"] * 300, n_ctx=200_000
        ),
        settings=AppSettings(),
        data_dir=tmp_path / "data",
    )
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=5000)
    # what the earlier tests of the suite left on the heap is not this window's work: a full collection of it (100+
    # ms late in the suite) would show up as a gap here
    import gc

    gc.collect()
    gc.freeze()
    watch = EventLoopWatch().__enter__()
    try:
        with qtbot.waitSignal(w.documents_finished, timeout=60_000):
            w.open_paths([str(books_dir() / "walden.txt")])
        assert len(w.doc_view.map.text) > 600_000 and len(w.doc_view.map.sentences) > 5000
        assert not w.doc_view.banner.isVisible(), "the whole book is in context"
        w.prompt_edit.setPlainText("What does the author build?")
        with qtbot.waitSignal(w.answer_finished, timeout=60_000):
            w.send()
        assert w.doc_view.heat and w.doc_view.top_list.count() > 0
        far = max(w.doc_view.map.sentences, key=lambda sid: w.doc_view.map.sentences[sid][1])
        w.doc_view.scroll_to(far)
        qtbot.wait(300)  # paint at the far end
        assert w.doc_view.text.textCursor().position() == w.doc_view.map.sentences[far][1]
    finally:
        watch.__exit__()
        w.shutdown()
        gc.unfreeze()
    assert watch.ticks > 50
    assert watch.longest < 0.1, f"longest event-loop gap {watch.longest * 1e3:.0f} ms"


def test_a_long_text_goes_into_the_view_in_pieces(qtbot):
    """A text longer than LOAD_CHUNK is put in the view over a few turns of the event loop (one piece blocked it
    60-100 ms for a book): shading and a scroll asked for meanwhile wait for the whole text, then apply."""
    from app.document_view import LOAD_CHUNK, LoadedDoc
    from engine.documents import Document

    line = "A sentence of the long text, one of many. " * 2 + "\n"
    n = 3 * LOAD_CHUNK // len(line)
    text = line * n
    view = document_view(
        qtbot, "long.txt", text, [(i * len(line), (i + 1) * len(line)) for i in range(n)], 20 * n
    )
    assert view.loading and 0 < len(view.text.toPlainText()) < len(text)
    far = n - 1
    view.set_heat({far: 1.0}, 1)
    view.scroll_to(far)
    assert view.text.extraSelections() == []  # nothing past the text in the view yet
    qtbot.waitUntil(lambda: not view.loading, timeout=10_000)
    assert view.text.toPlainText() == view.map.text
    assert view.text.textCursor().position() == view.map.qt(view.map.sentences[far][1])
    assert len(view.text.extraSelections()) == 1
    # a new text replaces one still loading: only the new one ends in the view
    view.set_documents([LoadedDoc(Document.from_text("a.txt", text))])
    view.set_documents([LoadedDoc(Document.from_text("b.txt", "Short. Text."))])
    qtbot.wait(50)
    assert not view.loading and view.text.toPlainText() == view.map.text and "Short. Text." in view.map.text


def document_view(qtbot, name: str, text: str, spans: list[tuple[int, int]], n_tokens: int):
    """A light-themed DocumentView holding one document whose sentences are `spans`, all in the context."""
    from app.document_view import DocumentView, LoadedDoc
    from app.theme import colors_for
    from engine.documents import Document

    view = DocumentView()
    qtbot.addWidget(view)
    view.set_colors(colors_for("light"))
    view.set_documents([LoadedDoc(Document.from_text(name, text))])
    view.set_loaded(tuple((i, 0, a, b) for i, (a, b) in enumerate(spans)), n_tokens, n_tokens, False)
    return view


def test_highlights_land_on_their_sentences_after_characters_beyond_the_bmp(qtbot):
    """QTextDocument counts UTF-16 units: an emoji is two positions there and one in Python; shading, jumping and
    the range chooser convert, so each sentence is shaded exactly."""
    text = "😀 First one here. Then 🙂🙂 a second. And a 𝄞 third one."
    spans = [(0, 17), (18, 37), (38, len(text))]
    view = document_view(qtbot, "emoji.txt", text, spans, 40)
    base = view.map.bases[0]
    view.set_heat({0: 1.0, 1: 0.5, 2: 0.25}, 1)
    view.refresh()
    shaded = sorted(sel.cursor.selectedText() for sel in view.text.extraSelections())
    assert shaded == sorted(text[a:b] for a, b in spans)
    view.scroll_to(2)
    assert view.map.py(view.text.textCursor().position()) == base + spans[2][0]
    assert all(view.map.py(view.map.qt(i)) == i for i in range(len(view.map.text) + 1))


def test_shades_follow_the_weights_as_they_change(qtbot):
    """refresh() reuses a sentence's selection while its shade stays: a sentence whose share of the top weight
    changes gets its new shade, the others keep theirs, and a new document drops the old text's selections."""
    from app.document_view import LoadedDoc
    from engine.documents import Document

    text = "First one here. Then a second. And a third one."
    spans = [(0, 15), (16, 30), (31, len(text))]
    view = document_view(qtbot, "three.txt", text, spans, 12)

    def alphas() -> dict[str, float]:
        return {
            sel.cursor.selectedText(): sel.format.background().color().alphaF()
            for sel in view.text.extraSelections()
        }

    view.add_retrieval(((0, 1.0), (1, 0.5)))
    view.refresh()
    first = alphas()
    assert set(first) == {text[0:15], text[16:30]} and first[text[0:15]] > first[text[16:30]]
    view.add_retrieval(((1, 1.5), (2, 0.1)))  # sentence 1 now leads: 2.0 vs 1.0
    view.refresh()
    second = alphas()
    assert second[text[16:30]] == pytest.approx(first[text[0:15]], abs=0.01)  # the top shade
    assert second[text[0:15]] == pytest.approx(first[text[16:30]], abs=0.01)  # half the top
    assert second[text[31:]] < second[text[0:15]]
    other = "Another text, the same length as before, quite."
    view.set_documents([LoadedDoc(Document.from_text("other.txt", other))])
    view.set_loaded(((0, 0, 0, 15),), 4, 4, False)
    view.set_heat({0: 1.0}, 1)
    # the shaded sentence and the greyed rest (out of the context), both in the new text
    assert sorted(sel.cursor.selectedText() for sel in view.text.extraSelections()) == [
        other[0:15],
        other[15:],
    ]


def test_memory_panel_shows_vectors_and_staging_apart(qtbot, make_window):
    w = make_window()
    open_sample(qtbot, w)
    qtbot.waitUntil(lambda: w.memory.last_memory is not None, timeout=5000)
    text = w.memory._values["device"].text()
    assert "vectors 1.2 MB" in text and "staging 2.0 MB" in text and text.startswith("3.2 MB")


def test_the_context_count_follows_the_prefill(qtbot, make_window):
    """The status bar said "Context 0 / 32,768" all through a document's prefill: it follows the prefill now."""
    w = make_window()
    seen: list[str] = []
    w.bridge.progress.connect(
        lambda e: seen.append(w.memory.context_label.text()) if e.phase == "prefill" else None
    )
    open_sample(qtbot, w)
    counts = [int(t.split()[1].replace(",", "")) for t in seen if t.split()[1].replace(",", "").isdigit()]
    assert len(counts) == len(seen) >= 3, seen
    assert counts == sorted(counts) and len(set(counts)) >= 3 and counts[-1] > 0, seen


def test_the_keyboard_alone_drives_the_window(qtbot, make_window, monkeypatch):
    """Ctrl+O opens documents, Ctrl+N starts a chat, typing + Ctrl+Enter asks, Esc stops, Ctrl+, opens the
    settings (Esc closes them), and Tab reaches every main control."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QFileDialog

    ctrl = Qt.KeyboardModifier.ControlModifier
    w = make_window(token_delay=0.05)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=3000)
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(SAMPLE)], "")))
    with qtbot.waitSignal(w.documents_finished, timeout=10_000):
        qtbot.keyClick(w, Qt.Key.Key_O, ctrl)
    n = w.conv_list.count()
    qtbot.keyClick(w, Qt.Key.Key_N, ctrl)
    assert w.conv_list.count() == n + 1
    w.prompt_edit.setFocus()
    qtbot.keyClicks(w.prompt_edit, "Where is the library?")
    qtbot.keyClick(w.prompt_edit, Qt.Key.Key_Return, ctrl)
    qtbot.waitUntil(lambda: len(w.chat.items[-1].text) > 3, timeout=5000)
    with qtbot.waitSignal(w.bridge.stopped, timeout=2000):
        qtbot.keyClick(w.prompt_edit, Qt.Key.Key_Escape)
    assert w.send_button.isEnabled()
    qtbot.keyClick(w, Qt.Key.Key_Comma, ctrl)
    dialog = w._settings_dialog
    qtbot.waitUntil(lambda: dialog is not None and dialog.isVisible(), timeout=3000)
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=3000)
    # Tab walks through the main controls
    w.prompt_edit.setFocus()
    seen = set()
    for _ in range(60):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        seen.add(QApplication.focusWidget())
    assert "\t" not in w.prompt_edit.toPlainText(), "Tab moves on from the prompt instead of typing a tab"
    for control in (w.send_button, w.conv_list, w.doc_view.text, w.doc_view.top_list, w.prompt_edit):
        assert control in seen, control.accessibleName()


def test_signal_emits_keep_the_reference_counts_of_true(qtbot):
    """PySide6 6.12.0's emit() returned True without owning it: each emit dropped a reference, and on Python 3.11 the
    app aborted at exit once the count ran out ("bool_dealloc"). The bridge emits several signals per token."""
    import sys

    from PySide6.QtCore import QObject, Signal

    class Source(QObject):
        value = Signal(object)

    src = Source()
    got: list = []
    src.value.connect(got.append)
    before = sys.getrefcount(True)
    for i in range(200):
        src.value.emit(i)
    assert len(got) == 200
    assert sys.getrefcount(True) >= before - 5, (before, sys.getrefcount(True))


def test_the_self_test_exits_cleanly(tiny_model_path, tmp_path):
    """skv-desktop --selftest answers one prompt and exits with 0: no abort at interpreter exit."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "SKV_DATA_DIR": str(tmp_path / "data")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.main",
            "--selftest",
            "--model",
            str(tiny_model_path),
            "--max-tokens",
            "24",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, r.stderr[-800:]
    assert "answer:" in r.stdout and "Fatal Python error" not in r.stderr


def test_follow_ups_carry_the_history_and_a_full_context_offers_three_choices(qtbot, make_window):
    from engine.worker import Ask

    w = make_window()
    open_sample(qtbot, w)
    ask(qtbot, w, "What is the pass code?")
    ask(qtbot, w, "Where is the card?")
    asks = [c for c in w.bridge._worker.commands if isinstance(c, Ask)]
    assert [len(a.history) for a in asks] == [0, 1]
    assert asks[1].history[0].question == "What is the pass code?" and asks[1].history[0].answer_tokens
    msgs = w.store.messages(w._conv_id)
    assert all(m.meta["answer_ids"] for m in msgs if m.role == "assistant")
    # the follow-up read the first turn's question: listed in the retrieval panel; a click scrolls the chat to it
    rows = [w.doc_view.top_list.item(i) for i in range(w.doc_view.top_list.count())]
    row = next(r for r in rows if "you, turn 1" in r.text())
    w.chat.moveCursor(w.chat.textCursor().MoveOperation.End)
    w.doc_view.top_list.itemClicked.emit(row)
    assert w.chat.textCursor().position() == w.chat.items[0].frame.firstPosition()

    # the engine refuses the next question: the banner says so and offers what to do; nothing is lost
    w.bridge._worker.max_turns = 1
    w.prompt_edit.setPlainText("And the ferry?")
    with qtbot.waitSignal(w.bridge.failed, timeout=10_000):
        w.send()
    qtbot.waitUntil(lambda: not w._ask_run, timeout=5000)
    assert w.banner.isVisible() and "drop the oldest turns" in w.banner.label.text()
    assert [b.text() for b in w.banner.actions] == ["Drop the oldest turns", "New chat", "Settings…"]
    assert [m.role for m in w.store.messages(w._conv_id)][-1] == "user"  # the question is kept
    turns = []
    w.bridge.turn_ended.connect(lambda e: turns.append(e))
    with qtbot.waitSignal(w.answer_finished, timeout=10_000):
        w.banner.actions[0].click()
    last = [c for c in w.bridge._worker.commands if isinstance(c, Ask)][-1]
    assert last.question == "And the ferry?" and last.drop_oldest and len(last.history) == 2
    assert not w.banner.isVisible() and turns[-1].turn == 2  # one turn left the context
    assert w._dropped[w._conv_id] == 1
    assert [m.role for m in w.store.messages(w._conv_id)] == ["user", "assistant"] * 3  # every message kept
    # the next question follows the turns still in the context
    ask(qtbot, w, "And the bus?")
    last = [c for c in w.bridge._worker.commands if isinstance(c, Ask)][-1]
    assert [r.question for r in last.history] == ["Where is the card?", "And the ferry?"]


def test_editing_an_earlier_question_cuts_the_conversation_there(qtbot, make_window):
    from engine.worker import Ask

    w = make_window()
    open_sample(qtbot, w)
    ask(qtbot, w, "What is the pass code?")
    ask(qtbot, w, "Where is the card?")
    ask(qtbot, w, "And the ferry?")
    w.edit_question(2)  # the second question
    assert w.prompt_edit.toPlainText() == "Where is the card?" and w.banner.isVisible()
    w.prompt_edit.setPlainText("Where is the map?")
    with qtbot.waitSignal(w.answer_finished, timeout=10_000):
        w.send()
    last = [c for c in w.bridge._worker.commands if isinstance(c, Ask)][-1]
    assert last.question == "Where is the map?" and [r.question for r in last.history] == [
        "What is the pass code?"
    ]
    msgs = w.store.messages(w._conv_id)
    assert [(m.role, m.text if m.role == "user" else "") for m in msgs] == [
        ("user", "What is the pass code?"),
        ("assistant", ""),
        ("user", "Where is the map?"),
        ("assistant", ""),
    ]
    assert [i.role for i in w.chat.items] == ["user", "assistant"] * 2


def _first_window(qtbot, tmp_path, monkeypatch, installed: list[str]):
    from fake_worker import FakeWorker

    from app.main_window import MainWindow
    from engine import models

    monkeypatch.setattr(
        models, "installed_builtin_models", lambda: [models.BUILTIN_MODELS[k] for k in installed]
    )
    monkeypatch.setattr(models, "resolve_model", lambda spec: Path(f"/models/{spec or 'default'}.gguf"))
    workers = []

    def factory(on_event):
        workers.append(FakeWorker(on_event))
        return workers[-1]

    w = MainWindow(bridge_factory=factory, data_dir=tmp_path / "data")
    qtbot.addWidget(w)
    w.show()
    return w, workers


def test_the_first_window_offers_the_built_in_models_with_the_default_preselected(
    qtbot, tmp_path, monkeypatch
):
    w, workers = _first_window(qtbot, tmp_path, monkeypatch, ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"])
    try:
        dlg = w.model_choice
        assert dlg is not None and dlg.isVisible()
        labels = [b.text() for _, b in dlg.buttons]
        assert labels[0].startswith("Qwen2.5-Coder-0.5B") and labels[1].startswith("Qwen2.5-Coder-1.5B")
        assert all("MiB" in x and "GiB" in x and "tokens/s" in x for x in labels)  # memory and speed estimate
        assert dlg.buttons[0][1].isChecked() and dlg.choice() == ""  # the default, preselected
        assert not any(type(c).__name__ == "LoadModel" for c in workers[0].commands)  # nothing loads before
        dlg.buttons[1][1].setChecked(True)
        dlg.accept()
        qtbot.waitUntil(
            lambda: any(type(c).__name__ == "LoadModel" for c in workers[0].commands), timeout=5000
        )
        load = next(c for c in workers[0].commands if type(c).__name__ == "LoadModel")
        assert load.config.model_path == "/models/builtin:qwen2.5-coder-1.5b.gguf"
        assert w.settings.model_path == "builtin:qwen2.5-coder-1.5b"
    finally:
        w.shutdown()
    # the choice was saved: the next window loads it without asking
    w2, workers2 = _first_window(qtbot, tmp_path, monkeypatch, ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"])
    try:
        assert w2.model_choice is None and w2.settings.model_path == "builtin:qwen2.5-coder-1.5b"
    finally:
        w2.shutdown()


def test_with_one_built_in_model_the_first_window_loads_it_without_asking(qtbot, tmp_path, monkeypatch):
    w, workers = _first_window(qtbot, tmp_path, monkeypatch, ["qwen2.5-coder-0.5b"])
    try:
        assert w.model_choice is None
        qtbot.waitUntil(
            lambda: any(type(c).__name__ == "LoadModel" for c in workers[0].commands), timeout=5000
        )
    finally:
        w.shutdown()
