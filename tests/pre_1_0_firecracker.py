"""A stand-in for Firecracker 0.24 (before 1.0): what firec sees of its API.

Firecracker before 1.0 has no ``GET /version``: it answers it, like every path
it does not know, with 400 ``Invalid request method and/or path``. ``GET /``
works and names the version (``vmm_version``). Run as a program (the
Firecracker command line: ``--api-sock PATH`` and flags it ignores), or use
:func:`serve` in a thread.
"""

from __future__ import annotations

import json
import os
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

VERSION = "0.24.4"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Firecracker API"
    sys_version = ""

    def _answer(self, status: int, body: dict[str, str] | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.command == "GET" and self.path == "/":
            info = {"id": "anonymous-instance", "state": "Not started", "vmm_version": VERSION}
            self._answer(200, {**info, "app_name": "Firecracker"})
            return
        path = self.path.strip("/")
        message = f"Invalid request method and/or path: {self.command} {path}."
        self._answer(400, {"fault_message": message})

    do_GET = do_PUT = do_PATCH = _any

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(socket_path: str) -> socketserver.BaseServer:
    """Serve the old API on ``socket_path`` from a daemon thread; ``shutdown()`` stops it."""
    server = _Server(socket_path, _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str]) -> None:
    if "--version" in argv:
        print(f"Firecracker v{VERSION}\n")
        return
    socket_path = argv[argv.index("--api-sock") + 1]
    with _Server(socket_path, _Handler) as server:
        try:
            server.serve_forever()
        finally:
            os.unlink(socket_path)


if __name__ == "__main__":
    main(sys.argv[1:])
