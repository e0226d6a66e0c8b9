"""A local HTTP server for download tests: serves byte strings, honours ``Range`` requests and can
drop connections part-way or serve corrupted bytes, like a fragile data host."""

from __future__ import annotations

import http.server
import re
import threading
from collections import Counter
from typing import Self


class FileServer:
    """Serve ``files`` (URL path -> bytes) on 127.0.0.1.

    Attributes:
        cut_after: URL path -> number of bytes after which the next responses for it stop (the
            connection closes early, with the full Content-Length announced); each entry is used
            ``cuts`` times, then the file is served in full.
        corrupt_times: URL path -> k: the first k responses for it carry the file with its last
            byte flipped (-1: every response), as a mirror with a damaged copy would.
        ranges: honour ``Range`` requests (status 206); False answers 200 with the whole file.
        requests: (path, Range header or None) of every request, in order.
    """

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files = dict(files)
        self.ranges = ranges
        self.cut_after: dict[str, int] = {}
        self.cuts = 1
        self.corrupt_times: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                range_header = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.path, range_header))
                    count = server.counts()[self.path]
                    body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                corrupt = server.corrupt_times.get(self.path, 0)
                if body and (corrupt == -1 or count <= corrupt):
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if server.ranges and match:
                    start = int(match[1])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut = server.cut_after.get(self.path)
                if cut is not None and server.cuts > 0:
                    server.cuts -= 1
                    self.wfile.write(payload[: max(cut - start, 0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def counts(self) -> Counter:
        """How many requests each URL path received."""
        return Counter(path for path, _ in self.requests)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
