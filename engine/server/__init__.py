"""`skv serve`: an OpenAI-compatible local server on the SentenceKV engine.

app.py (routes, the Host and API-key guard, streaming), protocol.py (request checks, response bodies),
bridge.py (one EngineWorker, requests run in arrival order against the cached context), errors.py (the error
shape)."""
