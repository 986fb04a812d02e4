"""A loopback TCP relay that counts the bytes between an RPC client and a llama.cpp RPC server: what a decode step
sends over the network, measured at the socket (ggml-rpc keeps no byte counters, and /proc/PID/io does not count
socket recv/send). The relay adds a hop, so timings are taken on direct connections (`skv bench rpc` does both)."""

from __future__ import annotations

import socket
import threading


class Meter:
    """Listens on 127.0.0.1 (a free port) and relays each connection to `target` (host, port), counting bytes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._up = 0  # client -> server
        self._down = 0  # server -> client
        self._lock = threading.Lock()
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(8)
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def totals(self) -> tuple[int, int]:
        """(bytes client -> server, bytes server -> client) so far."""
        with self._lock:
            return self._up, self._down

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    if up:
                        self._up += len(data)
                    else:
                        self._down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._srv.close()
