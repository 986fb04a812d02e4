"""A model split across machines with llama.cpp's RPC backend (engine/rpc.py), on loopback.

Two `skv rpc-server` processes on 127.0.0.1 hold part of a 4-layer tiny model (`--gpu-layers 2`: its last layer on
one, the output layer on the other, the first three layers here); `skv ask` then answers token for token as on one machine, under `full` and under `sentence` with a
budget below the context. The errors a user meets are one sentence each: an unreachable server, a server of
another protocol version (a stand-in that answers the HELLO with 9.0.0), a server on another machine without
--rpc-allow-remote, and a server killed mid-answer (exit 1, no core dump)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from skv_harness import book_text
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

from engine import rpc
from engine.bench.rpc_meter import Meter

SKV = Path(sys.executable).parent / "skv"
CMD = [str(SKV)] if SKV.exists() else [sys.executable, "-m", "engine.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the client's checks, no server needed -------------------------------------------------------------------


def test_endpoints_parse_and_bad_ones_name_themselves():
    assert [str(e) for e in rpc.parse_endpoints("127.0.0.1:5000, localhost:5001")] == [
        "127.0.0.1:5000",
        "localhost:5001",
    ]
    for bad in ("nohost", "h:0", "h:99999", ":5", "a:1,a:1", ""):
        with pytest.raises(rpc.RpcError) as e:
            rpc.parse_endpoints(bad)
        assert e.value.code == 2


def test_a_server_on_another_machine_needs_the_allow_flag():
    eps = rpc.parse_endpoints("127.0.0.1:5000,192.168.1.20:5000")
    with pytest.raises(rpc.RpcError, match="192.168.1.20:5000.*--rpc-allow-remote") as e:
        rpc.check_allowed(eps, allow_remote=False)
    assert e.value.code == 2
    rpc.check_allowed(eps, allow_remote=True)
    rpc.check_allowed(rpc.parse_endpoints("127.0.0.1:1,[::1]:2,localhost:3"), allow_remote=False)


def test_an_unreachable_server_is_one_sentence():
    with pytest.raises(rpc.RpcError, match=r"cannot reach the RPC server at 127\.0\.0\.1:\d+"):
        rpc.probe(rpc.Endpoint("127.0.0.1", _free_port()), timeout=2)


def _fake_server(reply: bytes) -> tuple[int, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def run():
        conn, _ = srv.accept()
        with conn, srv:
            conn.recv(1 + 8 + rpc.CONN_CAPS_SIZE)
            conn.sendall(reply)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, t


def test_a_server_of_another_protocol_version_is_one_sentence():
    rsp = bytes([9, 0, 0, 0]) + bytes(rpc.CONN_CAPS_SIZE)
    port, t = _fake_server(struct.pack("<Q", len(rsp)) + rsp)
    with pytest.raises(rpc.RpcError, match=r"speaks protocol 9\.0\.0, this build 7\.0"):
        rpc.probe(rpc.Endpoint("127.0.0.1", port), timeout=5)
    t.join(5)
    port, t = _fake_server(struct.pack("<Q", 3) + b"abc")  # an older HELLO shape
    with pytest.raises(rpc.RpcError, match="another protocol"):
        rpc.probe(rpc.Endpoint("127.0.0.1", port), timeout=5)
    t.join(5)


def test_the_cli_refuses_a_remote_server_with_exit_2(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("One sentence.", encoding="utf-8")
    p = subprocess.run(
        [*CMD, "ask", "--doc", str(doc), "--rpc", "10.1.2.3:50052", "Q?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "--rpc-allow-remote" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# --- two loopback servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_model(tmp_path_factory):
    if not rpc.available():
        pytest.skip("this wheel has no RPC backend (built without GGML_RPC)")
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("the llama.cpp vocab GGUF is missing; run native/build.py first")
    d = tmp_path_factory.mktemp("rpc")
    model = write_tiny_gguf(d / "tiny-4l.gguf", vocab, TinyConfig(n_layer=4, seed=4242))
    doc = d / "book.txt"
    doc.write_text(book_text(n_chars=7000), encoding="utf-8")
    return model, doc


class Server:
    def __init__(self, env: dict) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [*CMD, "rpc-server", "--port", str(self.port), "--threads", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                return
            except OSError:
                assert self.proc.poll() is None, "".join(self.lines)
                time.sleep(0.2)
        raise AssertionError("the RPC server did not start: " + "".join(self.lines))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def accepted(self) -> int:
        return sum("Accepted client connection" in x for x in self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture()
def servers(tmp_path):
    env = {**os.environ, "SKV_CACHE_DIR": str(tmp_path / "cache")}
    # the wait for the port above connects once: the servers serve one client at a time, so those probes end first
    ss = [Server(env), Server(env)]
    yield ss, env
    for s in ss:
        s.stop()


def _ask_cmd(model, doc, *extra, max_tokens=12, question="What did the rabbit say?") -> list[str]:
    return [
        *CMD,
        "ask",
        "--model",
        str(model),
        "--doc",
        str(doc),
        "--n-ctx",
        "4096",
        "--max-tokens",
        str(max_tokens),
        "--no-session-cache",
        *extra,
        question,
    ]


def _ask(model, doc, env, *extra, timeout=300):
    return subprocess.run(
        _ask_cmd(model, doc, "--json", *extra), capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("policy", [["--policy", "full"], ["--policy", "sentence", "--budget", "1024"]])
def test_split_across_two_servers_answers_as_one_machine(split_model, servers, policy):
    model, doc = split_model
    ss, env = servers
    meters = [Meter("127.0.0.1", s.port) for s in ss]  # counts the bytes each server gets
    rpc_args = ["--rpc", ",".join(m.endpoint for m in meters), "--gpu-layers", "2"]
    local = _ask(model, doc, env, *policy)
    split = _ask(model, doc, env, *policy, *rpc_args)
    # each server got its layer's weights (the model's last layer on one, the output layer on the other)
    got = [m.totals()[0] for m in meters]
    assert all(g > 2 * 2**20 for g in got), got
    assert local.returncode == 0, local.stderr
    assert split.returncode == 0, split.stderr
    a, b = json.loads(local.stdout), json.loads(split.stdout)
    assert a["answer"] and b["answer"] == a["answer"]
    assert b["stats"]["prefill_tokens"] == a["stats"]["prefill_tokens"] > 1024
    assert all(s.accepted() >= 2 for s in ss), [s.lines for s in ss]  # the probe, then llama.cpp


def test_a_server_killed_mid_answer_is_one_sentence_and_exit_1(split_model, servers):
    model, doc = split_model
    ss, env = servers
    rpc_args = ["--rpc", ",".join(f"127.0.0.1:{s.port}" for s in ss), "--gpu-layers", "2"]
    proc = subprocess.Popen(
        _ask_cmd(model, doc, *rpc_args, max_tokens=2000, question="Tell me everything."),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while ss[1].accepted() < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)
    ss[1].proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "the RPC connection failed" in err and "saved document sessions are intact" in err
    assert "Traceback" not in err and "core dumped" not in err


def test_app_settings_take_servers_and_refuse_a_remote_one_without_the_checkbox():
    from app.settings import AppSettings

    with pytest.raises(ValueError, match="not on this machine.*checkbox"):
        AppSettings(rpc="10.0.0.2:50052")
    s = AppSettings(rpc="10.0.0.2:50052, 127.0.0.1:50053", rpc_allow_remote=1)
    assert s.rpc_servers == ("10.0.0.2:50052", "127.0.0.1:50053")
    assert s.needs_reload(AppSettings()) and not s.needs_reload(s)
    with pytest.raises(ValueError, match="HOST:PORT"):
        AppSettings(rpc="nohost")
    assert AppSettings().rpc_servers == ()
