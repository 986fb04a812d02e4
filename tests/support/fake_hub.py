"""A stand-in Hugging Face hub on loopback (HEAD/GET with ETag, X-Repo-Commit, Range) for the download tests."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = "tester/tiny-gguf"
FILE = "tiny.Q4_K_M.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 64 * 1024


class FakeHub:
    """HEAD/GET /{repo}/resolve/{revision}/{file} with ETag (the LFS sha256), X-Repo-Commit, Content-Length and
    Range support. `cut_gets` GET responses announce the whole length but stop after `cut_at` bytes."""

    def __init__(self, files: dict[str, bytes], etag_sha: bool = True) -> None:
        self.files = files
        self.etag_sha = etag_sha
        self.cut_gets = 0
        self.cut_at = 0
        self.ranges: list[str | None] = []  # Range header of each GET
        self.served = 0  # body bytes sent by GETs (since reset_served)
        self.served_gen = 0  # bumped by reset_served: a GET of an earlier generation no longer counts
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _file(self) -> bytes | None:
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                if m is None or m.group(1) != REPO:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                data = hub.files.get(m.group(3))
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return data

            def _headers(self, data: bytes, status: int, start: int) -> None:
                self.send_response(status)
                etag = hashlib.sha256(data).hexdigest() if hub.etag_sha else "abc123"
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                data = self._file()
                if data is not None:
                    self._headers(data, 200, 0)

            def do_GET(self) -> None:  # noqa: N802
                data = self._file()
                if data is None:
                    return
                rng = self.headers.get("Range")
                gen = hub.served_gen
                hub.ranges.append(rng)
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                self._headers(data, 206 if start else 200, start)
                body = data[start:]
                if hub.cut_gets > 0:
                    hub.cut_gets -= 1
                    body = body[: hub.cut_at]
                    self.close_connection = True
                for i in range(0, len(body), CHUNK):
                    self.wfile.write(body[i : i + CHUNK])
                    if (
                        gen == hub.served_gen
                    ):  # a cancelled GET's handler may still be writing into the socket
                        hub.served += len(body[i : i + CHUNK])
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # clients that hang up mid-transfer are part of the tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset_served(self) -> None:
        """Count the body bytes of the GETs from now on only."""
        self.served_gen += 1
        self.served = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
