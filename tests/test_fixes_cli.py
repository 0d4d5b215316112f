"""Regression tests for the QA defects in the CLI client (against a real local HTTP server)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from picloud.cli import main as cli_main


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []
    answers: ClassVar[dict[str, tuple[int, Any]]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append({"method": self.command, "path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()}})
        status, body = self.answers.get(self.path.split("?")[0], (200, {"items": []}))
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[type[_Recorder]]:
    _Recorder.seen = []
    _Recorder.answers = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PICLOUD_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("PICLOUD_TOKEN", "pc_secret_admin")
    monkeypatch.setenv("PICLOUD_HOME", str(tmp_path / "home"))
    try:
        yield _Recorder
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_invoke_never_sends_the_control_plane_token(server: type[_Recorder]) -> None:
    assert cli_main(["invoke", "hello", "--data", "{}"]) == 0
    assert cli_main(["invocations"]) == 0
    fn = [r for r in server.seen if r["path"].startswith("/fn/")]
    api = [r for r in server.seen if r["path"].startswith("/api/")]
    assert fn and api
    assert all("authorization" not in r["headers"] for r in fn)
    assert api[0]["headers"]["authorization"] == "Bearer pc_secret_admin"


def test_the_url_comes_from_server_json_without_picloud_url(
        server: type[_Recorder], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from picloud.cli.server import remove_server_file, write_server_file

    url = os.environ["PICLOUD_URL"]
    port = int(url.rsplit(":", 1)[1])
    monkeypatch.delenv("PICLOUD_URL")
    home = tmp_path / "home"
    path = write_server_file(home, "0.0.0.0", port)
    assert json.loads(path.read_text())["url"] == f"http://127.0.0.1:{port}"
    assert cli_main(["invocations"]) == 0
    assert server.seen and server.seen[-1]["path"].startswith("/api/invocations")
    remove_server_file(path)
    assert not path.exists()
