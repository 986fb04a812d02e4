"""End to end on the real engine (tiny random-weight GGUF): drop a document → prefill progress → ask → tokens
stream → the document view shades retrieved sentences → a clicked word shows its sentences; Stop during prefill and
decode hands control back within 0.5 s; the event loop stays responsive while a document prefills."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(300)

TEXT = "\n".join(
    f"Sentence number {i} tells about the river, the hill and the old mill by the water." for i in range(150)
)


@pytest.fixture
def window(qtbot, tiny_model_path, tmp_path):
    from app.main_window import MainWindow
    from app.settings import AppSettings

    settings = AppSettings(n_ctx=4096, threads=1, budget=256, sink=16, ring=32, max_tokens=24)
    w = MainWindow(model_path=str(tiny_model_path), settings=settings, data_dir=tmp_path / "data")
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.load_finished, timeout=60_000) as loaded:
        pass
    assert loaded.args == [True], w.status_text()
    yield w
    w.shutdown()


def test_document_question_answer_with_retrieval_on_the_real_engine(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    doc = tmp_path / "mill.txt"
    doc.write_text(TEXT, encoding="utf-8")
    progress = []
    window.bridge.progress.connect(lambda e: progress.append(e))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(doc))])
    drop = QDropEvent(
        QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    with qtbot.waitSignal(window.documents_finished, timeout=120_000) as done:
        window.dropEvent(drop)
    assert done.args == [True], window.status_text()
    assert any(e.phase == "prefill" and e.done == e.total for e in progress)
    assert window.doc_view.map is not None and len(window.doc_view.map.sentences) >= 150

    tokens = []
    window.bridge.token.connect(lambda e: tokens.append(e))
    window.prompt_edit.setPlainText("What is by the water?")
    with qtbot.waitSignal(window.answer_finished, timeout=120_000) as answered:
        qtbot.keyClick(window.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert answered.args[0] and len(tokens) > 1
    assert window.doc_view.heat, "retrieved sentences are shaded"
    assert window.doc_view.top_list.count() > 0

    item = window.chat.items[-1]
    step = next(i for i in sorted(item.steps) if item.steps[i])
    # per layer from the real engine: the tiny model's two layers, each with its own sentences
    assert [lid for lid, _ in item.layer_steps[step]] == [0, 1]
    assert {s for _, picks in item.layer_steps[step] for s, _ in picks} == {s for s, _ in item.steps[step]}
    window.chat.select_token(len(window.chat.items) - 1, step)
    window.chat.word_clicked.emit(len(window.chat.items) - 1, step)
    assert window.doc_view.focus
    sid = sorted(window.doc_view.focus, key=lambda kv: (-kv[1], kv[0]))[0][0]
    assert window.doc_view.text.textCursor().position() == window.doc_view.map.sentences[sid][1]


def test_stop_during_decode_and_prefill_hands_control_back_quickly(qtbot, window, tmp_path):
    from dataclasses import replace

    window.settings = replace(window.settings, max_tokens=2000)
    window.prompt_edit.setPlainText("Tell a long story")
    window.send()
    qtbot.waitUntil(lambda: len(window.chat.items[-1].text) > 0, timeout=60_000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(window.bridge.stopped, timeout=2000):
        window.stop()
        assert window.send_button.isEnabled()
    assert time.perf_counter() - t0 < 0.5

    book = tmp_path / "book.txt"
    book.write_text(TEXT * 3, encoding="utf-8")
    window.open_paths([str(book)])
    qtbot.waitUntil(
        lambda: window.progress.bar.maximum() > 1 and window.progress.bar.value() > 0, timeout=60_000
    )
    t0 = time.perf_counter()
    with qtbot.waitSignal(window.documents_finished, timeout=2000) as ended:
        window.stop()
    assert ended.args == [False]
    assert time.perf_counter() - t0 < 0.5
    assert not window.progress.isVisible()


def test_event_loop_never_blocks_while_a_document_prefills(qtbot, window, tmp_path):
    """The GUI thread stays free during prefill: a 10 ms timer never waits more than 100 ms."""
    from event_loop import EventLoopWatch

    book = tmp_path / "book.txt"
    book.write_text(TEXT * 2, encoding="utf-8")
    with EventLoopWatch() as watch, qtbot.waitSignal(window.documents_finished, timeout=120_000):
        window.open_paths([str(book)])
    assert watch.ticks > 5
    assert watch.longest < 0.1, watch.longest


def test_reopening_a_document_restores_its_saved_session(qtbot, tiny_model_path, tmp_path):
    """The app saves prefilled documents (the real entry point passes a SessionStore): opening the same document
    again restores it without a prefill and says so."""
    from app.main_window import MainWindow
    from app.settings import AppSettings
    from engine.session_store import SessionStore
    from engine.worker import EngineWorker

    store = SessionStore(tmp_path / "sessions")
    settings = AppSettings(n_ctx=4096, threads=1, budget=256, sink=16, ring=32, max_tokens=8)
    doc = tmp_path / "mill.txt"
    doc.write_text(TEXT, encoding="utf-8")
    for attempt in range(2):
        w = MainWindow(
            model_path=str(tiny_model_path),
            settings=settings,
            data_dir=tmp_path / f"data{attempt}",
            bridge_factory=lambda on_event: EngineWorker(on_event, store=store),
        )
        qtbot.addWidget(w)
        w.show()
        try:
            with qtbot.waitSignal(w.load_finished, timeout=60_000):
                pass
            loaded: list = []
            w.bridge.documents_loaded.connect(loaded.append)
            with qtbot.waitSignal(w.documents_finished, timeout=120_000):
                w.open_paths([str(doc)])
            assert loaded[-1].restored == (attempt == 1)
            if attempt == 1:
                assert "saved session" in w.banner.text()
                w.prompt_edit.setPlainText("What is by the water?")
                with qtbot.waitSignal(w.answer_finished, timeout=60_000) as answered:
                    w.send()
                assert answered.args[0]
        finally:
            w.shutdown()
    assert len(store.entries()) == 1
