"""SentenceKV Desktop GUI (PySide6). Talks to the engine only through worker + events."""
