"""A model split across hosts with llama.cpp's RPC backend (ggml-rpc): the client side (`--rpc HOST:PORT,...`) and
the server (`skv rpc-server`).

The server is llama.cpp's own: `serve()` calls `ggml_backend_rpc_start_server` of the wheel's libggml-rpc, as
upstream's `tools/rpc/rpc-server.cpp` does (same devices, same defaults), so there is no second build. The client
registers each server with `ggml_backend_rpc_add_server` before the model loads; llama.cpp then puts the RPC
devices first in the model's device list and splits the offloaded layers (`n_gpu_layers`) between them by free
memory. SentenceKV keeps every token's K/V of its layers in this host's RAM; see native/README.md, "Across machines".

ggml-rpc aborts the process when a server cannot be reached, speaks another protocol or dies mid-answer. The first
two are checked here before llama.cpp connects (a TCP connect and the protocol's HELLO), each one sentence; for the
third, `connect()` installs a native abort callback (llama_skv_exit_on_abort), which prints one sentence and exits
with status 1 instead of a core dump (files written before are complete: the session store writes atomically).

Security: upstream calls the RPC server a proof of concept never to expose on an open network (no authentication,
no encryption; remote-code-execution reports were handled as known issues). `serve()` binds 127.0.0.1 unless told
otherwise, and the client refuses a non-loopback server unless `allow_remote` is set.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

# the wheel's ggml-rpc protocol (ggml/include/ggml-rpc.h: RPC_PROTO_MAJOR_VERSION, _MINOR_); the client accepts a
# server of the same major version and a minor version no newer than its own, as ggml-rpc's own handshake does
PROTO_MAJOR = 7
PROTO_MINOR = 0
CMD_HELLO = 14  # RPC_CMD_HELLO, fixed by the protocol
CONN_CAPS_SIZE = 24  # RPC_CONN_CAPS_SIZE: zeros = plain TCP, no transport upgrade
DEFAULT_PORT = 50052  # upstream rpc-server's default
REMOTE_WARNING = (
    "warning: the RPC server has no authentication or encryption and runs what a client sends; "
    "expose it only on a network you trust, never the internet"
)


class RpcError(Exception):
    """One sentence for the user; `code` is the CLI's exit status (2: bad input, 1: a server failed)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """`HOST:PORT[,HOST:PORT...]` -> endpoints; RpcError (code 2) naming the bad item."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RpcError(f"--rpc wants HOST:PORT[,HOST:PORT...], got {item!r}", code=2)
        out.append(Endpoint(host.strip("[]"), int(port)))
    if not out:
        raise RpcError("--rpc wants at least one HOST:PORT", code=2)
    if len(set(out)) != len(out):
        raise RpcError(f"--rpc names a server twice: {text}", code=2)
    return tuple(out)


def check_allowed(endpoints: tuple[Endpoint, ...], allow_remote: bool) -> None:
    remote = [str(e) for e in endpoints if not e.loopback]
    if remote and not allow_remote:
        raise RpcError(
            f"refusing the RPC server {', '.join(remote)}: it is not on this machine, and the RPC protocol has no "
            "authentication or encryption; pass --rpc-allow-remote if the network is yours",
            code=2,
        )


def probe(endpoint: Endpoint, timeout: float = 5.0) -> tuple[int, int, int]:
    """Connect and run the protocol's HELLO: the server's version (major, minor, patch). RpcError when it cannot be
    reached or speaks another version (ggml-rpc itself would abort the process)."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as s:
            s.sendall(bytes([CMD_HELLO]) + struct.pack("<Q", CONN_CAPS_SIZE) + bytes(CONN_CAPS_SIZE))
            head = _recv(s, 8)
            (size,) = struct.unpack("<Q", head)
            if size != 4 + CONN_CAPS_SIZE:
                raise RpcError(
                    f"the RPC server at {endpoint} speaks another protocol (a HELLO of {size} bytes): "
                    f"run the skv rpc-server of this version (protocol {PROTO_MAJOR}.{PROTO_MINOR}) there"
                )
            rsp = _recv(s, size)
    except RpcError:
        raise
    except OSError as e:
        raise RpcError(
            f"cannot reach the RPC server at {endpoint} ({e.strerror or e}): is `skv rpc-server` running there "
            "and the port open?"
        ) from None
    major, minor, patch = rsp[0], rsp[1], rsp[2]
    if major != PROTO_MAJOR or minor > PROTO_MINOR:
        raise RpcError(
            f"the RPC server at {endpoint} speaks protocol {major}.{minor}.{patch}, this build "
            f"{PROTO_MAJOR}.{PROTO_MINOR}: run the skv rpc-server of this version there"
        )
    return major, minor, patch


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError(0, "the connection closed during the handshake")
        buf += chunk
    return buf


# --- the wheel's ggml -----------------------------------------------------------------------------------------


def _loaded(name: str) -> ctypes.CDLL:
    """The copy of a wheel library that libllama loaded: the wheel holds libggml.so and libggml.so.0 as two files
    (wheels keep no symlinks), and a second copy would have a registry of its own."""
    import llama_cpp
    import llama_cpp.llama_cpp  # noqa: F401  (loads libllama and, through its soname links, libggml)

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for cand in (lib_dir / f"{name}.so.0", lib_dir / f"{name}.so"):
        if cand.exists():
            return ctypes.CDLL(str(cand), mode=ctypes.RTLD_GLOBAL)
    raise RpcError(f"{name} is missing from the llama-cpp-python wheel: run `make setup`", code=2)


_P = ctypes.c_void_p
# the ggml calls used here: name -> (restype, argtypes)
_GGML_API = {
    "ggml_backend_reg_by_name": (_P, [ctypes.c_char_p]),
    "ggml_backend_reg_get_proc_address": (_P, [_P, ctypes.c_char_p]),
    "ggml_backend_reg_name": (ctypes.c_char_p, [_P]),
    "ggml_backend_register": (None, [_P]),
    "ggml_backend_dev_count": (ctypes.c_size_t, []),
    "ggml_backend_dev_get": (_P, [ctypes.c_size_t]),
    "ggml_backend_dev_type": (ctypes.c_int, [_P]),
    "ggml_backend_dev_by_type": (_P, [ctypes.c_int]),
    "ggml_backend_dev_description": (ctypes.c_char_p, [_P]),
    "ggml_backend_dev_backend_reg": (_P, [_P]),
}


@functools.cache
def _ggml() -> ctypes.CDLL:
    """libggml as libllama loaded it, its signatures bound once."""
    lib = _loaded("libggml")
    for name, (restype, argtypes) in _GGML_API.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _rpc_proc(name: str) -> int:
    lib = _ggml()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        raise RpcError(
            "this build of llama.cpp has no RPC backend: run `make setup` to rebuild the patched wheel",
            code=2,
        )
    fn = lib.ggml_backend_reg_get_proc_address(reg, name.encode())
    if not fn:
        raise RpcError(
            f"the RPC backend has no {name}: run `make setup` to rebuild the patched wheel", code=2
        )
    return fn


def available() -> bool:
    """The wheel was built with the RPC backend."""
    try:
        return bool(_ggml().ggml_backend_reg_by_name(b"RPC"))
    except OSError:
        return False


def _install_abort_hook() -> None:
    """A fatal ggml error from here on (a server that dies mid-answer) is one sentence and exit 1, printed by the
    native library itself (no Python runs then: the error can come from any thread, at any time)."""
    import llama_cpp.llama_cpp as ll

    fn = ll._lib.llama_skv_exit_on_abort
    fn.restype = None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int32]
    fn(
        b"skv: error: the RPC connection failed (",
        b"); the answer is lost, saved document sessions are intact: restart the server or run without --rpc",
        1,
    )


def connect(endpoints: tuple[Endpoint, ...], allow_remote: bool = False) -> int:
    """Check and register every server (before the model loads); returns the number of RPC devices added."""
    check_allowed(endpoints, allow_remote)
    for e in endpoints:
        probe(e)
    add = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(_rpc_proc("ggml_backend_rpc_add_server"))
    _install_abort_hook()
    lib = _ggml()
    before = lib.ggml_backend_dev_count()
    for e in endpoints:
        if str(e) in _registered:
            continue  # ggml-rpc keeps one registry entry per server for the process
        reg = add(str(e).encode())
        if not reg:
            raise RpcError(f"the RPC server at {e} offers no device")
        lib.ggml_backend_register(reg)  # as llama.cpp's common/arg.cpp: its devices join the model's list
        _registered.add(str(e))
    return lib.ggml_backend_dev_count() - before


_registered: set[str] = set()


GGML_BACKEND_DEVICE_TYPE_CPU = 0
GGML_BACKEND_DEVICE_TYPE_GPU = 1
GGML_BACKEND_DEVICE_TYPE_IGPU = 2
GGML_BACKEND_DEVICE_TYPE_ACCEL = 3


@contextlib.contextmanager
def model_devices(servers: tuple[str, ...]):
    """Inside the block a model load uses this machine's GPUs and the RPC devices of `servers` only.

    A registered RPC server stays in ggml's device registry for the life of the process, and a model load without a
    device list takes every registered device (and asks each for its free memory: a server gone since would abort
    the load). So once any server was registered here, each load names its devices: llama-cpp-python's Llama has
    no parameter for the list, so its model parameters get it for the call. With no server registered in this
    process nothing changes (the list stays NULL: llama.cpp's own choice)."""
    if not _registered:
        yield
        return
    import llama_cpp.llama_cpp as ll

    lib = _ggml()
    devs = []
    for i in range(lib.ggml_backend_dev_count()):
        d = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(d) not in (GGML_BACKEND_DEVICE_TYPE_GPU, GGML_BACKEND_DEVICE_TYPE_IGPU):
            continue
        reg = lib.ggml_backend_dev_backend_reg(d)
        if reg and lib.ggml_backend_reg_name(reg) == b"RPC":
            if (lib.ggml_backend_dev_description(d) or b"").decode() not in servers:
                continue
        devs.append(d)
    # RPC servers first, as llama.cpp orders them (fewer transfers), in the order given
    order = {ep: i for i, ep in enumerate(servers)}
    devs.sort(key=lambda d: order.get((lib.ggml_backend_dev_description(d) or b"").decode(), len(order)))
    arr = (ctypes.c_void_p * (len(devs) + 1))(*devs, None)
    original = ll.llama_model_default_params

    def with_devices():
        p = original()
        p.devices = ctypes.cast(arr, ctypes.c_void_p)
        return p

    with _load_lock:
        ll.llama_model_default_params = with_devices
        try:
            yield
        finally:
            ll.llama_model_default_params = original


_load_lock = threading.Lock()


def serve(host: str, port: int, threads: int, cache_dir: str | None = None) -> None:
    """Run llama.cpp's RPC server on this host's devices (its accelerators, else the CPU); blocks until killed."""
    lib = _ggml()
    start = ctypes.CFUNCTYPE(
        None,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
    )(_rpc_proc("ggml_backend_rpc_start_server"))
    devs = []
    for i in range(lib.ggml_backend_dev_count()):
        d = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(d) not in (GGML_BACKEND_DEVICE_TYPE_CPU, GGML_BACKEND_DEVICE_TYPE_ACCEL):
            devs.append(d)
    if not devs:
        devs = [lib.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)]
    arr = (ctypes.c_void_p * len(devs))(*devs)
    endpoint = f"{host}:{port}".encode()
    start(endpoint, cache_dir.encode() if cache_dir else None, threads, len(devs), arr)
