"""The API answers on a loop of its own: a health check and a listing come back while the engine's loop
(the media path's) is stuck in one callback, and a write, which the engine must act on, waits for it."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from typing import Any

from api.server import Server
from tests.conftest import ApiClient
from tests.support.relay_process import ADMIN_KEY

STUCK_AT_MOST_SECONDS = 10.0


def get(url: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if key is not None:
        request.add_header("Authorization", f"APIKey {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=STUCK_AT_MOST_SECONDS * 2) as response:
        return response.status, json.loads(response.read())


async def test_reads_answer_while_the_engines_loop_is_stuck(service: Server, api: ApiClient) -> None:
    assert (await api.call("POST", "/streaming/streams", {"name": "s"}))[0] == 200
    base = f"http://127.0.0.1:{service.ports.http}"
    answered = threading.Event()
    answers: list[tuple[int, Any]] = []

    def client() -> None:
        answers.append(get(base + "/healthz"))
        answers.append(get(base + "/streaming/restreams", ADMIN_KEY))
        answered.set()

    stuck_through: list[bool] = []

    def stuck() -> None:
        # Holds the engine's loop (as a long burst of media callbacks would) until the reads are answered.
        threading.Thread(target=client, daemon=True).start()
        stuck_through.append(answered.wait(STUCK_AT_MOST_SECONDS))

    asyncio.get_running_loop().call_soon(stuck)
    await asyncio.sleep(0)
    assert stuck_through == [True], "the reads waited for the engine's loop"
    assert answers == [(200, {"status": "ok", "live_streams": 0}), (200, [])]


async def test_a_write_is_acted_on_by_the_engine_before_it_answers(service: Server, api: ApiClient) -> None:
    base = f"http://127.0.0.1:{service.ports.http}"
    written = threading.Event()
    result: list[tuple[int, Any]] = []

    def client() -> None:
        result.append(get(base + "/streaming/streams", ADMIN_KEY, {"name": "w"}))
        written.set()

    blocked_write: list[bool] = []

    def stuck() -> None:
        threading.Thread(target=client, daemon=True).start()
        blocked_write.append(not written.wait(1.0))  # the write needs the engine's loop: it cannot answer yet

    asyncio.get_running_loop().call_soon(stuck)
    await asyncio.sleep(0)
    assert blocked_write == [True]
    assert await asyncio.to_thread(written.wait, STUCK_AT_MOST_SECONDS)
    status, body = result[0]
    assert status == 200 and body["name"] == "w"
