"""Request bodies over the limit (settings.DATA_UPLOAD_MAX_MEMORY_SIZE) are refused before they are read, on
every path and ahead of authentication, over real HTTP through uvicorn: a declared Content-Length over the
limit answers 413 at once without the body being sent, a chunked body answers 413 as soon as it passes the
limit, and nothing is spooled to a temporary file on the way."""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import time

import httpx
import pytest
from django.conf import settings

LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the web subprocess reads the same environment
PATHS = ["/api/v1/runs", "/v1/chat/completions", "/accounts/login/", "/healthz"]


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str, *lines: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + "".join(
        f"{line}\r\n" for line in lines
    ) + "\r\n").encode()  # fmt: skip


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of one HTTP/1.1 answer (Content-Length framed)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += piece
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return int(status_line.split()[1]), headers, body


def assert_error_shape(path: str, body: bytes) -> None:
    error = json.loads(body)["error"]
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "request_too_large", error
    else:
        assert set(error) == {"code", "message", "details"} and error["code"] == "too_large", error
        assert error["details"]["limit"] == LIMIT


def temp_files(pid: int) -> set[str]:
    """Files the process holds open that have no name: a SpooledTemporaryFile rolled over to disk."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            found.add(target)
    return found


@pytest.mark.parametrize("path", PATHS)
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(web, path):
    with connect(web.extra["url"]) as sock:
        started = time.monotonic()
        sock.sendall(head(path, f"Content-Length: {1024**3}"))  # 1 GiB announced, not a byte of it sent
        status, headers, body = read_answer(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert status == 413, body
    assert elapsed < 2, elapsed
    assert headers.get("connection") == "close"
    assert_error_shape(path, body)


@pytest.mark.parametrize("path", PATHS)
def test_a_chunked_body_is_refused_once_it_passes_the_limit_and_nothing_is_spooled(web, path):
    pid = web.popen.pid
    before = temp_files(pid)
    chunk = b"x" * 65536
    sent, answer, spooled = 0, None, set()
    # A well-formed key nobody checked yet: the gateway refuses a malformed one before reading any body (a 401
    # that would race the 413 this test is about).
    key = f"Authorization: Bearer ao_{secrets.token_hex(6)}_{secrets.token_urlsafe(16)}"
    with connect(web.extra["url"]) as sock:
        sock.sendall(head(path, "Transfer-Encoding: chunked", key))
        while sent < 4 * LIMIT + 4 * 1024 * 1024:  # past FILE_UPLOAD_MAX_MEMORY_SIZE if nothing refuses it
            if select.select([sock], [], [], 0.01)[0]:
                answer = read_answer(sock, timeout=5)
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed while we were still sending
                break
            sent += len(chunk)
        spooled = temp_files(pid) - before
        if answer is None:
            answer = read_answer(sock, timeout=5)
    status, _headers, body = answer
    assert status == 413, (status, body[:300])
    assert_error_shape(path, body)
    assert not spooled, spooled


def test_a_body_under_the_limit_is_read_and_answered_as_usual(web):
    payload = json.dumps({"input": {"text": "x" * (LIMIT // 2)}})
    response = httpx.post(web.extra["url"] + "/api/v1/runs", content=payload, timeout=30)
    assert response.status_code == 401, response.text[:300]  # read whole, then the missing key is the answer
    assert response.json()["error"]["code"] == "unauthenticated"


def test_one_byte_over_the_limit_is_refused_and_the_limit_itself_is_not(web):
    url = web.extra["url"] + "/v1/chat/completions"
    assert httpx.post(url, content=b" " * (LIMIT + 1), timeout=30).status_code == 413
    assert httpx.post(url, content=b" " * LIMIT, timeout=30).status_code == 401
