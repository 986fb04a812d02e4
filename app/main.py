"""`skv-desktop`: the GUI entry point.

    skv-desktop [--model PATH] [--selftest] [--prompt TEXT] [--max-tokens N] [--timeout S]

--selftest opens the window, loads the model, sends one prompt, prints the answer and exits (0 if an answer came
back within --timeout seconds, 1 otherwise). It runs offscreen with QT_QPA_PLATFORM=offscreen.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skv-desktop", description="SentenceKV Desktop")
    p.add_argument(
        "--model", default="", help="GGUF file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)"
    )
    p.add_argument("--selftest", action="store_true", help="answer one prompt, print it and exit")
    p.add_argument("--prompt", default=None, help="prompt for --selftest")
    p.add_argument("--max-tokens", type=int, default=48, help="tokens per answer (default 48)")
    p.add_argument("--timeout", type=float, default=300.0, help="--selftest time limit in seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_tokens < 1:
        print(f"skv-desktop: error: --max-tokens must be >= 1, got {args.max_tokens}", file=sys.stderr)
        return 2

    from app.qt_platform import platform_problem

    problem = platform_problem()
    if problem:  # QApplication would abort the process with Qt's own message
        print(f"skv-desktop: error: {problem}", file=sys.stderr)
        return 2

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    qapp_name = "SentenceKV Desktop"

    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    qapp.setApplicationName(qapp_name)
    qapp.setDesktopFileName("sentencekv-desktop")
    factory = None
    if not args.selftest:  # a self-test leaves no saved document sessions behind
        from engine.session_store import SessionStore
        from engine.worker import EngineWorker

        def factory(on_event):
            return EngineWorker(on_event, store=SessionStore())

    window = MainWindow(
        model_path=args.model, max_tokens=args.max_tokens, bridge_factory=factory, ask_model=not args.selftest
    )
    window.show()
    if args.selftest and args.prompt is None:
        window.prompt_edit.setPlainText(DEFAULT_PROMPT)
    if not args.selftest:
        code = qapp.exec()
        window.shutdown()
        return code

    result = {"code": 1}
    if args.prompt is not None:
        window.prompt_edit.setPlainText(args.prompt)

    def on_loaded(ok: bool) -> None:
        if ok:
            window.send()
        else:
            print(f"skv-desktop: error: {window.status_text()}", file=sys.stderr)
            qapp.quit()

    def on_answer(text: str) -> None:
        print(f"answer: {text!r}")
        result["code"] = 0 if text.strip() else 1
        if not text.strip():
            print(f"skv-desktop: error: empty answer ({window.status_text()})", file=sys.stderr)
        qapp.quit()

    def on_timeout() -> None:
        print(f"skv-desktop: error: no answer within {args.timeout:g} s", file=sys.stderr)
        qapp.quit()

    window.load_finished.connect(on_loaded)
    window.answer_finished.connect(on_answer)
    QTimer.singleShot(int(args.timeout * 1000), on_timeout)
    qapp.exec()
    window.shutdown()
    return result["code"]


if __name__ == "__main__":
    sys.exit(main())
