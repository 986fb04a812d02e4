"""`skv serve` (engine/server/): the OpenAI-compatible server, started on a free loopback port and talked to with
the official `openai` package and with raw HTTP (httpx, sockets). Error paths, cancelling, the queue and the
prompt cache run on the tiny random model; answers that must be right (a needle in a ~6k-token system message)
on the built-in default model. Nothing leaves loopback."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from engine.params import DEFAULT_PARAMS
from engine.server.app import ServerSettings, create_app
from engine.server.bridge import EngineBridge
from engine.session import SessionConfig

openai = pytest.importorskip("openai")

ERROR_KEYS = {"message", "type", "param", "code"}


@contextlib.contextmanager
def served(model: Path, n_ctx: int = 2048, api_key: str | None = None, max_queue: int = 16, threads: int = 1):
    """The base URL ("http://127.0.0.1:PORT/v1") while the server runs in a thread over a real engine (one thread
    for the tiny model: llama.cpp's threads wait on each other badly on a busy machine)."""
    bridge = EngineBridge(
        SessionConfig(str(model), n_ctx=n_ctx, n_threads=threads, skv=DEFAULT_PARAMS),
        max_queue=max_queue,
        max_tokens=64,
    )
    bridge.start()
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(bridge, ServerSettings("127.0.0.1", api_key)), log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        bridge.close()


def api_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    """The response is the one error shape with this status (and code, param); returns its error object."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


def health(client: httpx.Client) -> dict:
    return client.get("/health", timeout=5).json()


def wait_for(predicate, timeout: float, step: float = 0.01) -> float:
    """Seconds until predicate() held (AssertionError past timeout)."""
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(step)
    return time.monotonic() - t0


def chat(content: str, **extra) -> dict:
    return {"model": "tiny-llama", "messages": [{"role": "user", "content": content}], **extra}


LONG_RUN = {
    "max_tokens": 1800,
    "skv": {"ignore_eos": True},
}  # seconds on the tiny model: long enough to cancel


# ------------------------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny_url(tiny_model_path):
    with served(tiny_model_path) as url:
        yield url


@pytest.fixture()
def http(tiny_url):
    # the server's own address: an httpx client sends Host 127.0.0.1:PORT
    with httpx.Client(base_url=tiny_url.removesuffix("/v1"), timeout=60) as c:
        yield c


def test_models_and_health(http):
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-llama"]
    assert http.get("/v1/models/tiny-llama").json()["id"] == "tiny-llama"
    api_error(http.get("/v1/models/gpt-4o"), 404, "model_not_found", "model")
    h = health(http)
    assert h["model"] == "tiny-llama" and h["queue"] == 0 and h["running"] is False and h["n_ctx"] == 2048


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "missing_required_parameter", "model"),
        ({"model": "tiny-llama"}, 400, "missing_required_parameter", "messages"),
        ({"model": "tiny-llama", "messages": []}, 400, "invalid_value", "messages"),
        ({"model": "tiny-llama", "messages": "hi"}, 400, "invalid_type", "messages"),
        (chat("hi", max_tokens="ten"), 400, "invalid_type", "max_tokens"),
        (chat("hi", max_tokens=True), 400, "invalid_type", "max_tokens"),
        (chat("hi", max_completion_tokens=0), 400, "invalid_value", "max_tokens"),
        (chat("hi", temperature=5), 400, "invalid_value", "temperature"),
        (chat("hi", stop=[1]), 400, "invalid_type", "stop"),
        (chat("hi", stream="yes"), 400, "invalid_type", "stream"),
        (
            chat("hi", stream_options={"include_usage": 1}),
            400,
            "invalid_type",
            "stream_options.include_usage",
        ),
        (
            {"model": "tiny-llama", "messages": [{"content": "hi"}]},
            400,
            "missing_required_parameter",
            "messages[0].role",
        ),
        (
            {"model": "tiny-llama", "messages": [{"role": "tool", "content": "x"}]},
            400,
            "unsupported_parameter",
            "messages[0].role",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            },
            400,
            "invalid_value",
            "messages",
        ),
        (
            {
                "model": "tiny-llama",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ],
            },
            400,
            "unsupported_parameter",
            "messages[0].content",
        ),
        (chat("hi", n=2), 400, "unsupported_parameter", "n"),
        (chat("hi", logprobs=True), 400, "unsupported_parameter", "logprobs"),
        (
            chat("hi", tools=[{"type": "function", "function": {"name": "f"}}]),
            400,
            "unsupported_parameter",
            "tools",
        ),
        (chat("hi", skv={"policy": "bogus"}), 400, "invalid_value", "skv"),
        (chat("hi", skv={"budget": 50}), 400, "invalid_value", "skv"),
        (chat("hi", skv={"budget": "big"}), 400, "invalid_type", "skv.budget"),
        (chat("hi", skv={"doc": "/etc/passwd"}), 400, "invalid_value", "skv"),
        ({**chat("hi"), "model": "gpt-4o"}, 404, "model_not_found", "model"),
    ],
)
def test_chat_errors(http, body, status, code, param):
    if isinstance(body, bytes):
        r = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    else:
        r = http.post("/v1/chat/completions", json=body)
    api_error(r, status, code, param)


def test_unsupported_options_are_named(http):
    err = api_error(
        http.post("/v1/chat/completions", json=chat("hi", n=3, tools=[{"type": "function"}], logprobs=True)),
        400,
        "unsupported_parameter",
    )
    assert all(name in err["message"] for name in ("n", "tools", "logprobs"))


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "tiny-llama", "prompt": [1, 2, 3]}, "invalid_type", "prompt"),
        ({"model": "tiny-llama"}, "missing_required_parameter", "prompt"),
        ({"model": "tiny-llama", "prompt": "hi", "echo": True}, "unsupported_parameter", "echo"),
        ({"model": "tiny-llama", "prompt": "hi", "best_of": 3}, "unsupported_parameter", "best_of"),
    ],
)
def test_completion_errors(http, body, code, param):
    api_error(http.post("/v1/completions", json=body), 400, code, param)


def test_routes_and_methods_keep_the_error_shape(http):
    api_error(http.get("/v2/anything"), 404, "not_found")
    api_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_prompt_over_the_context(http):
    long_question = "word " * 3000  # > n_ctx 2048
    api_error(http.post("/v1/chat/completions", json=chat(long_question)), 400, "context_length_exceeded")
    api_error(
        http.post("/v1/chat/completions", json=chat("hi", max_tokens=4000)), 400, "context_length_exceeded"
    )
    body = {
        "model": "tiny-llama",
        "messages": [
            {"role": "system", "content": "A long line. " * 1500},
            {"role": "user", "content": "hi"},
        ],
    }
    api_error(http.post("/v1/chat/completions", json=body), 400, "context_length_exceeded")
    assert http.post("/v1/chat/completions", json=chat("hi", max_tokens=4)).status_code == 200  # it goes on


def test_body_over_8_mib(http):
    big = json.dumps(chat("x" * (9 << 20))).encode()
    api_error(http.post("/v1/chat/completions", content=big), 413, "request_too_large")

    def chunked():  # no Content-Length: refused while it arrives
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    api_error(http.post("/v1/chat/completions", content=chunked()), 413, "request_too_large")


def test_foreign_host_header_is_refused(http, tiny_url):
    port = tiny_url.split(":")[2].split("/")[0]
    api_error(http.get("/v1/models", headers={"Host": f"rebind.example:{port}"}), 403, "host_not_allowed")
    api_error(
        http.post("/v1/chat/completions", json=chat("hi"), headers={"Host": "evil.test"}),
        403,
        "host_not_allowed",
    )
    assert http.get("/v1/models", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_chat_and_stream_with_the_openai_client(tiny_url):
    client = openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0)
    whole = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=12, temperature=0
    )
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert whole.model_extra["skv"]["stats"]["policy"] == "sentence"  # the extension, as the README reads it
    chunks = list(
        client.chat.completions.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    done = client.completions.create(model="tiny-llama", prompt="hello", max_tokens=12, temperature=0)
    assert (
        done.object == "text_completion" and done.choices[0].text == text
    )  # the same prompt as one user message


def test_sse_wire_format(http):
    with http.stream("POST", "/v1/chat/completions", json=chat("hi", max_tokens=4, stream=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"][0]["finish_reason"] in ("stop", "length") and "retrieved" in last["skv"]


def test_seed_and_temperature(http):
    def answer(seed: int) -> str:
        r = http.post(
            "/v1/chat/completions",
            json=chat("hi", max_tokens=8, temperature=1.0, seed=seed, skv={"ignore_eos": True}),
        )
        return r.json()["choices"][0]["message"]["content"]

    assert answer(7) == answer(7)
    assert answer(7) != answer(8)  # 8 tokens drawn from a 32k vocabulary at temperature 1


def test_the_prompt_cache_keeps_documents_and_turns(http):
    system = {
        "role": "system",
        "content": "The harbor opens at dawn. Ships leave at noon. The gate shuts at dusk.",
    }
    q1 = {"role": "user", "content": "When do ships leave?"}
    r1 = http.post(
        "/v1/chat/completions", json={"model": "tiny-llama", "messages": [system, q1], "max_tokens": 6}
    ).json()
    assert (
        r1["skv"]["stats"]["documents"] == "prefilled"
        and r1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    )
    a1 = {"role": "assistant", "content": r1["choices"][0]["message"]["content"]}
    q2 = {"role": "user", "content": "And the gate?"}
    r2 = http.post(
        "/v1/chat/completions",
        json={"model": "tiny-llama", "messages": [system, q1, a1, q2], "max_tokens": 6},
    ).json()
    stats = r2["skv"]["stats"]
    assert stats["documents"] == "kept" and stats["turns_kept"] == 1 and stats["turns_replayed"] == 0
    # everything of the first exchange was in the context already: its prompt and its answer
    assert r2["usage"]["prompt_tokens_details"]["cached_tokens"] == (
        r1["usage"]["prompt_tokens"] + r1["usage"]["completion_tokens"]
    )
    # the same documents with a new question: they stay, the turns go
    r3 = http.post(
        "/v1/chat/completions", json={"model": "tiny-llama", "messages": [system, q2], "max_tokens": 6}
    ).json()
    prefix = r3["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert r3["skv"]["stats"]["documents"] == "kept" and 0 < prefix < r1["usage"]["prompt_tokens"]
    # another system message: a new prefill
    other = {"role": "system", "content": "Nothing here."}
    r4 = http.post(
        "/v1/chat/completions", json={"model": "tiny-llama", "messages": [other, q2], "max_tokens": 6}
    ).json()
    assert (
        r4["skv"]["stats"]["documents"] == "prefilled"
        and r4["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    )


def test_retrieved_sentences_come_from_the_text_not_a_file(http, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT-7731. Never to be read.")
    body = {
        "model": "tiny-llama",
        "max_tokens": 6,
        "skv": {"ignore_eos": True, "budget": 200, "sink": 4, "ring": 8},
        "messages": [
            {"role": "system", "content": f"See {secret}. " + "The river bends west. " * 60},
            {"role": "user", "content": "Where does the river bend?"},
        ],
    }
    r = http.post("/v1/chat/completions", json=body).json()
    retrieved = r["skv"]["retrieved"]
    assert retrieved and all({"doc", "location", "text", "weight", "sentence"} <= set(e) for e in retrieved)
    assert all(0 < e["weight"] <= 1 for e in retrieved)
    assert {e["doc"] for e in retrieved} <= {"system", "conversation"}
    assert not any("SECRET" in e["text"] for e in retrieved)
    assert r["skv"]["memory"]["full_kv_bytes"] > 0 and r["skv"]["stats"]["budget"] == 200


def test_api_key(tiny_model_path):
    with served(tiny_model_path, api_key="s3cret") as url:
        base = url.removesuffix("/v1")
        with httpx.Client(base_url=base, timeout=30) as c:
            api_error(c.get("/v1/models"), 401, "invalid_api_key")
            api_error(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
            api_error(
                c.post("/v1/chat/completions", json=chat("hi"), headers={"Authorization": "Basic s3cret"}),
                401,
                "invalid_api_key",
            )
        client = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert client.models.list().data[0].id == "tiny-llama"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()


def test_stream_disconnect_cancels_the_run(http):
    with http.stream("POST", "/v1/chat/completions", json=chat("go on", stream=True, **LONG_RUN)) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert health(http)["running"]
    t0 = time.monotonic()
    wait_for(lambda: not health(http)["running"], timeout=5)
    assert time.monotonic() - t0 < 0.5


def test_plain_request_disconnect_cancels_the_run(http, tiny_url):
    port = int(tiny_url.split(":")[2].split("/")[0])
    body = json.dumps(chat("go on", **LONG_RUN)).encode()
    raw = socket.create_connection(("127.0.0.1", port))
    raw.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    wait_for(lambda: health(http)["running"], timeout=10)
    time.sleep(0.2)
    raw.close()
    t0 = time.monotonic()
    wait_for(lambda: not health(http)["running"], timeout=5)
    assert time.monotonic() - t0 < 0.5


def test_full_queue_is_429_and_order_is_arrival(tiny_model_path):
    with (
        served(tiny_model_path, max_queue=3) as url,
        httpx.Client(base_url=url.removesuffix("/v1"), timeout=60) as c,
    ):
        done: list[int] = []
        with c.stream("POST", "/v1/chat/completions", json=chat("block", stream=True, **LONG_RUN)) as blocker:
            lines = blocker.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # it runs

            def ask(i: int) -> None:
                r = httpx.post(url + "/chat/completions", json=chat(f"request {i}", max_tokens=4), timeout=60)
                assert r.status_code == 200
                done.append(i)

            threads = []
            for i in range(3):
                threads.append(threading.Thread(target=ask, args=(i,)))
                threads[-1].start()
                wait_for(lambda n=i + 1: health(c)["queue"] == n, timeout=10)
            err = api_error(c.post("/v1/chat/completions", json=chat("one too many")), 429, "queue_full")
            assert "queue" in err["message"]
        for t in threads:  # the blocker went away: the queue runs in arrival order
            t.join(60)
        assert done == [0, 1, 2]


@pytest.mark.timeout(240)
def test_eight_clients_three_requests_each(tiny_url):
    answers: dict[int, list[str]] = {}
    errors: list[str] = []

    def client(k: int) -> None:
        oa = openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "system", "content": f"Client {k} keeps notes. The notes are short."}]
        mine = []
        try:
            for j in range(3):
                messages.append({"role": "user", "content": f"client {k} request {j}"})
                r = oa.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=6)
                mine.append(r.choices[0].message.content)
                messages.append({"role": "assistant", "content": mine[-1]})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {k}: {e!r}")
        answers[k] = mine

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200)
    assert not errors and sorted(answers) == list(range(8))
    assert all(len(a) == 3 for a in answers.values())
    assert time.monotonic() - t0 < 200


def test_skv_serve_command(tiny_model_path, tmp_path):
    env = {**os.environ, "SKV_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SKV_API_KEY", None)
    off = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--model", str(tiny_model_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert off.returncode == 2 and "--api-key" in off.stderr
    doc = tmp_path / "notes.txt"
    doc.write_text("The lighthouse keeper is called Ada. She rows to town on Fridays.\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--model",
            str(tiny_model_path),
            "--port",
            "0",
            "--n-ctx",
            "1024",
            "--doc",
            str(doc),
            "--no-session-cache",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("skv: serving tiny-llama at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        r = httpx.post(
            url + "/chat/completions",
            json=chat("Who keeps the lighthouse?", max_tokens=4, skv={"ignore_eos": True}),
            timeout=60,
        ).json()
        assert r["usage"]["completion_tokens"] == 4
        assert r["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # the --doc file, prefilled at start
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


# ------------------------------------------------------------------------------------------- default model

WORDS = (
    "amber",
    "brisk",
    "cobalt",
    "dusty",
    "gentle",
    "hollow",
    "lunar",
    "mellow",
    "quiet",
    "rustic",
    "silver",
)
NOUNS = ("anchor", "badger", "candle", "garden", "harbor", "island", "kettle", "lantern", "meadow", "orchard")
VERBS = ("rests beside", "looks toward", "waits under", "drifts past", "leans on", "glows near")
NEEDLE = "The special magic number for the copper falcon is 4817236."


def haystack(n_sentences: int, needle_at: int, seed: int = 5) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_sentences):
        if i == needle_at:
            out.append(NEEDLE)
        out.append(
            f"The {rng.choice(WORDS)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(WORDS)} "
            f"{rng.choice(NOUNS)}."
        )
    return " ".join(out)


@pytest.fixture(scope="module")
def default_client(default_model_path):
    with served(default_model_path, n_ctx=8192, threads=2) as url:
        yield (
            openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600),
            default_model_path.stem,
        )


@pytest.mark.slow
def test_default_model_chat_and_stream(default_client):
    client, model = default_client
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=16)
    assert "Paris" in whole.choices[0].message.content
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=16, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        == whole.choices[0].message.content
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_model_needle_in_the_system_message(default_client):
    client, model = default_client
    text = haystack(560, needle_at=60)  # ~6k tokens; the needle early, far outside a 1024-token window
    messages = [
        {"role": "system", "content": text},
        {"role": "user", "content": "What is the special magic number for the copper falcon?"},
    ]

    def ask(**extra):
        t0 = time.perf_counter()
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, **extra)
        return r, time.perf_counter() - t0

    first, t_first = ask()
    assert 5000 <= first.usage.prompt_tokens <= 7000
    assert "4817236" in first.choices[0].message.content  # sentence, budget 1024
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second, t_second = ask()
    assert second.choices[0].message.content == first.choices[0].message.content
    fresh_first = first.usage.prompt_tokens - first.usage.prompt_tokens_details.cached_tokens
    fresh_second = second.usage.prompt_tokens - second.usage.prompt_tokens_details.cached_tokens
    assert fresh_second <= fresh_first / 3 and t_second <= t_first / 3, (t_first, t_second, fresh_second)
    window, _ = ask(extra_body={"skv": {"policy": "window"}})
    assert "4817236" not in window.choices[0].message.content
    print(
        f"\nneedle: first {t_first:.2f} s ({fresh_first} fresh tokens), second {t_second:.2f} s "
        f"({fresh_second} fresh), window answer {window.choices[0].message.content!r}"
    )


def test_the_app_starts_and_stops_the_server(qtbot, tiny_model_path):
    from app.local_server import LocalServer
    from app.settings import AppSettings
    from app.settings_dialog import SettingsDialog

    server = LocalServer()
    dialog = SettingsDialog(AppSettings(model_path=str(tiny_model_path), n_ctx=1024, threads=2), None, server)
    qtbot.addWidget(dialog)
    assert dialog.server_label.text() == "not running"
    try:
        server.start(AppSettings(model_path=str(tiny_model_path), n_ctx=1024, threads=2), port=0)
        qtbot.waitUntil(lambda: server.address != "", timeout=60000)
        assert dialog.server_label.text() == server.address and dialog.server_button.text() == "Stop server"
        assert httpx.get(server.address + "/models", timeout=10).json()["data"][0]["id"] == "tiny-llama"
    finally:
        server.stop()
    qtbot.waitUntil(lambda: not server.running, timeout=10000)
    assert dialog.server_label.text() == "not running"
