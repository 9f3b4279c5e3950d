"""HPAv18 fetch throughput: ``hpa.data.hpav18`` fetching samples (four tinted jpgs each) from a
local HTTP server, decoding them through their stain's plane and writing 512 px PNGs.

    python -m benchmarks.hpav18_fetch [--samples 1000] [--workers 8] [--side 2048] [--size 512]

The jpgs are the 48 real competition PNGs (12 per stain) scaled to ``--side`` px and tinted in
their stain's colour as HPA publishes them (quality 90), made once at the start and served from
memory by a server in its own process; the ids and labels are the first rows of the real
HPAv18 csv. Measures the whole fetch: requests, decoding, resizing, PNG encoding, atomic writes;
and the fetching process's CPU time (all its threads), which does not depend on how busy the
machine is.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pandas as pd

from benchmarks.common import print_table, shared_dir, time_it
from hpa.core.labels import CHANNELS
from hpa.data.hpav18 import FetchSettings, fetch_hpav18
from hpa.data.reader import tint


def tinted_jpgs(side: int) -> dict[str, list[bytes]]:
    """Each stain's real PNGs, scaled to ``side`` px, as HPA's tinted jpgs."""
    real_channels = shared_dir() / "data/hpa2018/real_channels"
    jpgs: dict[str, list[bytes]] = {}
    for color in CHANNELS:
        for source in sorted(real_channels.glob(f"*_{color}.png")):
            stain = cv2.resize(cv2.imread(str(source), cv2.IMREAD_GRAYSCALE), (side, side))
            ok, encoded = cv2.imencode(".jpg", tint(stain, color), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok, source
            jpgs.setdefault(color, []).append(encoded.tobytes())
    return jpgs


def serve(jpgs: dict[str, list[bytes]], port: multiprocessing.Queue) -> None:
    """Answer ``GET /images/{plate}/{rest}_{color}.jpg`` with one of ``jpgs[color]``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            color = self.path.rsplit("_", 1)[-1].removesuffix(".jpg")
            choices = jpgs[color]
            body = choices[zlib.crc32(self.path.encode()) % len(choices)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port.put(server.server_address[1])
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--side", type=int, default=2048, help="side of the served jpgs, px")
    parser.add_argument("--size", type=int, default=512, help="side of the written PNGs, px")
    args = parser.parse_args()
    jpgs = tinted_jpgs(args.side)
    mean_kb = sum(len(body) for bodies in jpgs.values() for body in bodies) / 48 / 1024
    labels = pd.read_csv(shared_dir() / "data/hpa2018/HPAv18RBGY_wodpl.csv", nrows=args.samples)

    port: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(jpgs, port), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{port.get(timeout=60)}/images"
        settings = FetchSettings(base_url=base_url, size=args.size, workers=args.workers)
        with tempfile.TemporaryDirectory(prefix="hpa-bench-hpav18-") as folder:
            csv = Path(folder) / "hpav18.csv"
            labels.to_csv(csv, index=False)
            out = Path(folder) / "out"
            cpu_start = time.process_time()
            seconds = time_it(lambda: fetch_hpav18(csv, out, settings))
            cpu_seconds = time.process_time() - cpu_start
            landed = len(pd.read_csv(out / "train.csv"))
    finally:
        server.terminate()
        server.join()
    assert landed == len(labels), f"only {landed} of {len(labels)} samples landed"
    rows = [
        ("served jpgs", f"{args.side} px tinted, quality 90, {mean_kb:.0f} KiB on average"),
        ("fetched", f"{landed} samples ({4 * landed} jpgs) -> {args.size} px PNGs"),
        ("workers", f"{args.workers} (on {os.cpu_count()} CPU cores)"),
        ("total time", f"{seconds:.1f} s"),
        ("throughput", f"{landed / seconds:.1f} samples/s"),
        ("CPU time", f"{cpu_seconds:.1f} s ({1000 * cpu_seconds / landed:.0f} ms per sample)"),
        ("load average", " ".join(f"{load:.1f}" for load in os.getloadavg())),
    ]
    print_table("HPAv18 fetch from a local server", rows)


if __name__ == "__main__":
    main()
