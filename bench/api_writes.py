"""API write latency with many restreams defined: what an API write costs the event loop.

    python -m bench.api_writes [--restreams 400] [--writes 100]

Starts the relay in-process on free loopback ports with a temporary data directory, defines
`--restreams` restreams (10 per stream, all active; no stream is live, so nothing is pushed), then times
`--writes` restream creates and as many PATCHes (median and p95, milliseconds). An API write costs
the store's commit plus whatever the engine does on the change: before the change feed reconciled
incrementally, every write re-read every active restream of every client.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import aiohttp

from relay.config import Settings

KEY = "bench-api-writes-key-0123456789abcdef"


async def measure(restreams: int, writes: int) -> dict[str, float]:
    from api.server import Server

    with tempfile.TemporaryDirectory() as directory:
        values: dict[str, object] = {
            "data_dir": Path(directory),
            "media_bind": "127.0.0.1",
            "api_bind": "127.0.0.1",
            "http_port": 0,
            "rtmp_port": 0,
            "rtmps_port": 0,
            "srt_port": 0,
            "api_key": KEY,
            "srt_enabled": False,
            "max_streams_per_client": 10_000,
            "max_restreams_per_stream": 10_000,
        }
        known = {f.name for f in fields(Settings)}  # so that it also measures a relay from before the limits
        settings = Settings(**{name: value for name, value in values.items() if name in known})  # type: ignore[arg-type]
        server = Server(settings)
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.ports.http}/streaming"
            headers = {"Authorization": f"APIKey {KEY}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                stream_ids: list[int] = []

                async def post(path: str, body: object) -> dict[str, object]:
                    async with http.post(base + path, json=body) as response:
                        assert response.status == 200, await response.text()
                        result: dict[str, object] = await response.json()
                        return result

                for n in range((restreams + writes + 9) // 10):
                    stream_ids.append(int(str((await post("/streams", {"name": f"s{n}"}))["id"])))
                for n in range(restreams):
                    await post(
                        "/restreams",
                        {"restream": {"stream_id": stream_ids[n // 10], "uri": f"rtmp://192.0.2.1/live/{n}"}},
                    )
                creates, patches, made = [], [], []
                for n in range(writes):
                    started = time.perf_counter()
                    body = await post(
                        "/restreams",
                        {
                            "restream": {
                                "stream_id": stream_ids[(restreams + n) // 10],
                                "uri": f"rtmp://192.0.2.1/live/new{n}",
                            }
                        },
                    )
                    creates.append((time.perf_counter() - started) * 1000)
                    made.append(body["id"])
                for restream_id in made:
                    started = time.perf_counter()
                    async with http.patch(
                        f"{base}/restreams/{restream_id}", json={"restream": {"name": "renamed"}}
                    ) as response:
                        assert response.status == 200
                    patches.append((time.perf_counter() - started) * 1000)
        finally:
            await server.close()

    def p95(values: list[float]) -> float:
        return sorted(values)[int(len(values) * 0.95) - 1]

    return {
        "create_median_ms": statistics.median(creates),
        "create_p95_ms": p95(creates),
        "patch_median_ms": statistics.median(patches),
        "patch_p95_ms": p95(patches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restreams", type=int, default=400)
    parser.add_argument("--writes", type=int, default=100)
    args = parser.parse_args()
    result = asyncio.run(measure(args.restreams, args.writes))
    print(
        f"{args.restreams} restreams defined, {args.writes} writes each: "
        + ", ".join(f"{name} {value:.1f}" for name, value in result.items())
    )


if __name__ == "__main__":
    main()
