"""The dashboard in a real headless Chromium, against a relay with a real ffmpeg publisher.

Needs Debian's `chromium` (scripts/system-deps.sh test installs it) and the `playwright` package (the
test extra); Playwright's own browser download is never used. Set RELAY_UPDATE_SCREENSHOT=1 to
refresh docs/dashboard.png from this run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from api.server import Server
from tests.support import ADMIN_KEY, ROOT, Publisher, Receiver, free_port, pattern_publish_argv

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MASK = "\u2022" * 8
KNOWN_STATES = {"idle", "starting", "running", "retrying", "failed", "disabled"}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _missing_browser() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed: scripts/system-deps.sh test (apt-get install chromium)"
    return None


@dataclass
class Tab:
    """A browser page, and what it reported: console errors and uncaught exceptions, every URL it requested."""

    page: Any
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def tab() -> AsyncIterator[Tab]:
    missing = _missing_browser()
    if missing:
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page = await context.new_page()
            page.set_default_timeout(15_000)
            opened = Tab(page)

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    opened.problems.append(message.text)

            page.on("console", on_console)
            page.on("pageerror", lambda error: opened.problems.append(str(error)))
            page.on("request", lambda request: opened.requests.append(request.url))
            yield opened
        finally:
            await browser.close()


async def api_get(base: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base + path, headers={"Authorization": f"APIKey {ADMIN_KEY}"}) as response,
    ):
        return response.status, (await response.json() if response.status == 200 else None)


async def test_operator_runs_a_show_from_the_dashboard(quick_service: Server, tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    await page.goto(base + "/")

    # Sign in: the key is asked once and kept for the tab.
    await page.fill("#key-input", ADMIN_KEY)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#board", state="visible")
    await page.wait_for_selector("#connection.conn-live")

    # A stream made with the form.
    await page.fill("#new-stream-form input[name=name]", "Sunday show")
    await page.click("#new-stream-form button[type=submit]")
    card = page.locator("article.stream", has_text="Sunday show")
    await card.wait_for()
    stream_id = int(await card.get_attribute("data-stream-id"))
    status, stream = await api_get(base, f"/streaming/streams/{stream_id}")
    assert status == 200

    # Ingest URLs: the token stays hidden until "show".
    rtmp_row = card.locator(".ingest-row[data-transport=rtmp]")
    masked = await rtmp_row.locator("code").inner_text()
    assert MASK in masked and stream["token"] not in masked
    assert stream["token"] not in await page.locator("body").inner_text()
    await rtmp_row.get_by_role("button", name="show").click()
    push_url = await rtmp_row.locator("code").inner_text()
    assert push_url == stream["push_url"]
    await rtmp_row.get_by_role("button", name="hide").click()
    assert stream["token"] not in await page.locator("body").inner_text()
    assert await card.locator(".ingest-row[data-transport=srt]").count() == 1

    receiver_port = free_port()
    async with (
        Receiver(tmp_path / "received.flv", port=receiver_port, key="test"),
        Publisher(pattern_publish_argv(push_url, seconds=40)) as encoder,
    ):
        # Live without a reload, with the source's figures.
        await card.locator(".live-badge[data-live=true]").wait_for(timeout=15_000)
        await card.locator(".facts dd", has_text="320\u00d7240").wait_for()
        await card.locator(".facts dd", has_text="25 fps").wait_for()

        # A destination added with the form.
        form = card.locator("form.add-destination")
        await form.locator("input[name=name]").fill("Local receiver")
        await form.locator("input[name=uri]").fill(f"rtmp://127.0.0.1:{receiver_port}/live/test")
        await form.get_by_role("button", name="Add destination").click()
        row = card.locator("tr.restream", has_text="Local receiver")
        await row.wait_for()
        restream_id = int(await row.get_attribute("data-restream-id"))
        state = row.locator(".state")
        assert await state.inner_text() in KNOWN_STATES
        # The destination's stream key ("test", the path) is never shown.
        assert await row.locator(".dest-uri").inner_text() == f"rtmp://127.0.0.1:{receiver_port}/\u2026"

        # The push starts and the page shows it running, from the event feed, without a reload.
        await page.wait_for_function(
            "id => document.querySelector(`tr[data-restream-id='${id}'] .state`)?.textContent === 'running'",
            arg=restream_id,
            timeout=10_000,
        )

        # The ingest figures arrive from the periodic stats events.
        await page.wait_for_function(
            "id => /[1-9][0-9]* kbit|Mbit/.test(document.querySelector(`[data-stream-id='${id}'] .facts`).textContent)",
            arg=stream_id,
        )
        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("RELAY_UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")

        # Switched off: "disabled" on the page and in the API.
        await row.locator("input.active-toggle").click()
        await row.locator(".state[data-state=disabled]").wait_for()
        status, restream = await api_get(base, f"/streaming/restreams/{restream_id}")
        assert restream["active"] is False and restream["status"]["state"] == "disabled"
        await row.locator("input.active-toggle").click()
        await page.wait_for_function(
            "id => document.querySelector(`tr[data-restream-id='${id}'] .state`)?.textContent !== 'disabled'",
            arg=restream_id,
        )

        # Renamed through the edit form.
        await row.get_by_role("button", name="edit").click()
        edit_row = card.locator("tr.edit-row:visible")
        await edit_row.locator("input[name=name]").fill("Receiver B")
        await edit_row.get_by_role("button", name="save").click()
        await card.locator("tr.restream .dest-name", has_text="Receiver B").wait_for()

        # The encoder stops: reconnecting while the destinations are held (1 s here), then offline,
        # without a reload.
        encoder.sigkill()
        await encoder.wait(within=10)
        await card.locator(".live-badge[data-state=offline]").wait_for(timeout=10_000)

    # Deleted (after confirming).
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await card.locator(f"tr[data-restream-id='{restream_id}']").get_by_role("button", name="delete").click()
    await card.locator(f"tr[data-restream-id='{restream_id}']").wait_for(state="detached")
    assert (await api_get(base, f"/streaming/restreams/{restream_id}"))[0] == 404

    assert tab.problems == []
    assert all(url.startswith(base + "/") for url in tab.requests), tab.requests


async def test_an_srt_destination_s_link_shows_on_its_row(quick_service: Server, tab: Tab, tmp_path: Path) -> None:
    """The relay's SRT caller measures the link: its row shows libsrt's RTT and what was sent, from the
    periodic stats events, and never the destination's passphrase."""
    page = tab.page
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    headers = {"Authorization": f"APIKey {ADMIN_KEY}"}
    passphrase = "srt-destination-5ecret"
    async with (
        Receiver(tmp_path / "received.ts", srt=True, key=passphrase) as receiver,
        aiohttp.ClientSession(headers=headers) as session,
    ):
        async with session.post(f"{base}/streaming/streams", json={"name": "SRT show"}) as response:
            stream = await response.json()
        body = {"restream": {"name": "SRT receiver", "stream_id": stream["id"], "uri": receiver.uri(), "active": True}}
        async with session.post(f"{base}/streaming/restreams", json=body) as response:
            restream_id = (await response.json())["id"]
        await page.goto(base + "/")
        await page.fill("#key-input", ADMIN_KEY)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#connection.conn-live")
        link = page.locator(f"tr[data-restream-id='{restream_id}'] td.link")
        await link.wait_for()
        assert await link.inner_text() == "\u2014"  # nothing is sent yet
        async with Publisher(pattern_publish_argv(stream["push_url"], seconds=30)):
            # "SRT RTT 0.1 ms · sent 330 kbit/s · lost 0 · retrans 0": a measured RTT and a rate above zero
            await page.wait_for_function(
                r"""id => {
                    const cell = document.querySelector(`tr[data-restream-id='${id}'] td.link`);
                    const text = cell?.dataset.transport === 'srt' ? cell.textContent : '';
                    const rtt = /RTT\s([0-9.]+)\sms/.exec(text), sent = /sent\s([0-9.]+)\s(kbit|Mbit)/.exec(text);
                    return rtt && sent && Number(rtt[1]) > 0 && Number(sent[1]) > 0;
                }""",
                arg=restream_id,
                timeout=20_000,
            )
            text = await link.inner_text()
            assert "lost" in text and "retrans" in text, text
            assert "latency" in (await link.get_attribute("title") or "")
        assert passphrase not in await page.content()
    assert tab.problems == []
