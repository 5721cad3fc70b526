"""Screenshots of the Ray dashboard pages README "Watch it in the Ray dashboard" shows.

After a run on `make ray-up` (`--ray-address auto`), with Debian's chromium installed:

    .venv/bin/python docs/dashboard_screenshots.py --run quick-look --out docs/img

Drives headless Chromium over the DevTools protocol (aiohttp, from the dashboard extra) so it can
open the Logs section's stdout tab of the rank-0 worker of the run's first Train run. Writes
ray-dashboard-job.png (the Jobs page entry of the driver) and ray-dashboard-worker.png (the worker
with its epoch lines).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


async def _shoot(ws_url: str, pages: list[tuple[str, str | None, Path]], size: tuple[int, int]) -> None:
    import aiohttp

    ids = iter(range(1, 10_000))

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        async def call(method: str, **params):
            msg_id = next(ids)
            await ws.send_json({"id": msg_id, "method": method, "params": params})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == msg_id:
                    return data.get("result", {})

        await call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False)
        for url, click_text, path in pages:
            await call("Page.navigate", url=url)
            await asyncio.sleep(6)  # the dashboard polls its API before it renders the tables
            if click_text:
                script = ("[...document.querySelectorAll('button,[role=tab]')]"
                          f".find(e => e.textContent.trim().toUpperCase() === {click_text.upper()!r})?.click()")
                await call("Runtime.evaluate", expression=script)
                await asyncio.sleep(3)
            shot = await call("Page.captureScreenshot", format="png")
            path.write_bytes(base64.b64decode(shot["data"]))
            print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265")
    parser.add_argument("--run", required=True, help="the run folder's name (the driver job's convbench_run label)")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--size", default="1400x900", help="window WIDTHxHEIGHT in pixels")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    [job] = [j for j in _json(f"{args.dashboard}/api/jobs/") if j.get("metadata", {}).get("convbench_run") == args.run]
    runs = [r for r in _json(f"{args.dashboard}/api/train/v2/runs/v1")["train_runs"] if r["job_id"] == job["job_id"]]
    first = min(runs, key=lambda r: r["start_time_ns"])
    [rank0] = [w for w in first["attempts"][-1]["workers"] if w["world_rank"] == 0]
    args.out.mkdir(parents=True, exist_ok=True)
    pages = [(f"{args.dashboard}/#/jobs/{job['job_id']}", None, args.out / "ray-dashboard-job.png"),
             (f"{args.dashboard}/#/actors/{rank0['actor_id']}", "stdout", args.out / "ray-dashboard-worker.png")]

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=9222",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    [target] = [t for t in _json("http://127.0.0.1:9222/json") if t["type"] == "page"]
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            asyncio.run(_shoot(target["webSocketDebuggerUrl"], pages, size))
        finally:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
