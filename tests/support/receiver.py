"""A real webhook receiver on loopback for the webhook tests: an ``http.server`` in a thread
that answers each POST as the test scripts it (a status, or holding the request open until
released) and keeps what it received."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    #: What to answer, request by request: a status, "hold" (answer 200 once released),
    #: "redirect" (307 to another path of the receiver) or "drip" (a 200 sent a byte every
    #: 0.1 s: no single read waits long, the whole answer takes seconds).
    script: list[int | str] = field(default_factory=list)
    #: Answer once the script is used up.
    default: int = 200
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    got: threading.Condition = field(default_factory=threading.Condition)

    def next_answer(self) -> int | str:
        return self.script.pop(0) if self.script else self.default

    def wait_requests(self, count: int, timeout: float = 30.0) -> list[Received]:
        with self.got:
            if not self.got.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {count} webhook requests "
                    f"(got {len(self.received)})"
                )
            return list(self.received)


@contextmanager
def webhook_receiver(**kwargs: object) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs)  # type: ignore[arg-type]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.got:
                answer = receiver.next_answer()
                receiver.received.append(Received(dict(self.headers.items()), body))
                receiver.got.notify_all()
            if answer == "hold":
                receiver.released.wait(60)
                answer = 200
            if answer == "drip":
                reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                try:
                    for byte in reply:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass  # the sender gave up
                self.close_connection = True
                return
            location = None
            if answer == "redirect":
                answer, location = 307, receiver.url + "/elsewhere"
            status = int(answer)
            text = b"ok" if status < 300 else b"receiver says no"
            try:
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            except OSError:
                pass  # the sender is gone (killed, or timed out)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
