"""Fetch the HPAv18 external images into the Kaggle layout.

    python -m hpa.data.hpav18 --csv HPAv18RBGY_wodpl.csv --out DIR [--base-url URL] [--size 512]
        [--workers 8] [--retries 5] [--backoff 1] [--timeout 60]

The csv (``Id,Target``, ids such as ``10580_1610_C1_1``) lists the images; image ``{Id}``'s
stain ``{color}`` is HPA's tinted jpg ``{base-url}/{plate}/{rest}_{color}.jpg``, where ``plate`` is
the id's part before its first ``_``. Each jpg is verified to be complete (its JPEG end marker)
and decoded, read through its stain's plane (``hpa.data.reader``, as every channel file is),
resized to ``--size`` px and written atomically as an 8-bit single-plane PNG::

    DIR/train/{Id}_{color}.png   the four stains of each id
    DIR/train.csv                Id,Target of every id whose four channels landed (csv order)
    DIR/failed.csv               Id,channel,reason of each channel that could not be fetched

so that DIR is a data root like any other. Requests run on ``--workers`` threads sharing one
HTTP client (at most that many connections to the host). 5xx answers, timeouts, dropped
connections, cut-off images and 429s are retried ``--retries`` times, waiting about ``--backoff``
seconds, doubling each time (with jitter); other answers (such as 404) are final. The exit
status is 1 while any channel failed. A second run fetches only the channels not yet on disk; run
one at a time per DIR (a run deletes the temporary files a killed run left in DIR/train).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import httpx
import numpy as np
import pandas as pd
import tenacity
from tqdm import tqdm

from hpa.data.reader import (
    channel_file_name,
    decode_channel,
    read_csv_table,
    read_labels_csv,
)
from hpa.data.validate import missing_end_marker
from hpa.errors import HPAInputError, exit_on_input_error
from hpa.io import write_bytes, write_csv
from hpa.labels import CHANNELS, format_target

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://v18.proteinatlas.org/images"
"""Where the 2018 competition teams fetched HPAv18 from."""

IMAGE_DIR = "train"
LABELS_FILE = "train.csv"
FAILED_FILE = "failed.csv"

_JPEG_START = b"\xff\xd8"
_HPAV18_ID = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9_-]+")  # {plate}_{rest}, safe in a URL


class Failure(NamedTuple):
    sample_id: str
    channel: str
    reason: str


class RetryableError(Exception):
    """A problem worth another request: a 5xx or 429 answer, or an image cut short."""


class FinalError(Exception):
    """A problem another request will not fix: a 404 or an image that is not the stain's."""


@dataclass(frozen=True)
class FetchSettings:
    base_url: str = DEFAULT_BASE_URL
    size: int = 512
    workers: int = 8
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0


def image_url(base_url: str, sample_id: str, color: str) -> str:
    plate, _, rest = sample_id.partition("_")
    return f"{base_url.rstrip('/')}/{plate}/{rest}_{color}.jpg"


def read_hpav18_csv(csv_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(ids, their Target strings) of an HPAv18 ``Id,Target`` csv; each id ``{plate}_{rest}``."""
    csv_path = Path(csv_path)
    ids, labels = read_labels_csv(csv_path)
    malformed = [row for row, sample_id in enumerate(ids) if not _HPAV18_ID.fullmatch(sample_id)]
    if malformed:
        line = read_csv_table(csv_path, ("Id",)).index[malformed[0]]
        raise HPAInputError(
            f"{csv_path}, line {line}: Id {ids[malformed[0]]!r} is not an HPAv18 image id "
            f"({{plate}}_{{image}}, such as 10580_1610_C1_1); {len(malformed)} such row(s)"
        )
    return ids, [format_target(row) for row in labels]


def fetch_hpav18(
    csv_path: str | Path, out_dir: str | Path, settings: FetchSettings, progress: bool = True
) -> list[Failure]:
    """Fetch every channel of the csv's ids not yet in ``out_dir``; write train.csv (and
    failed.csv when some failed). Returns the channels that failed."""
    _check_settings(settings)
    ids, targets = read_hpav18_csv(csv_path)
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(image_dir)
    present = set(os.listdir(image_dir))
    missing = {
        sample_id: [c for c in CHANNELS if _png_name(sample_id, c) not in present]
        for sample_id in ids
    }
    to_fetch = {sample_id: colors for sample_id, colors in missing.items() if colors}
    log.info(
        "HPAv18: %d of %d ids to fetch (%d channels) from %s with %d workers",
        len(to_fetch),
        len(ids),
        sum(len(colors) for colors in to_fetch.values()),
        settings.base_url,
        settings.workers,
    )
    failures: list[Failure] = []
    try:
        failures = _fetch_all(to_fetch, image_dir, settings, progress)
    finally:  # also when interrupted: train.csv lists the ids complete so far
        complete = _write_labels(out_dir, image_dir, ids, targets)
    row_of = {sample_id: row for row, sample_id in enumerate(to_fetch)}
    failures.sort(key=lambda failure: (row_of[failure.sample_id], CHANNELS.index(failure.channel)))
    _write_failures(out_dir, failures)
    log.info("HPAv18: %d of %d ids complete in %s", complete, len(ids), out_dir)
    if failures:
        failed_ids = len({failure.sample_id for failure in failures})
        log.error(
            "HPAv18: %d channel(s) of %d id(s) failed, listed in %s; run again to retry them",
            len(failures),
            failed_ids,
            out_dir / FAILED_FILE,
        )
    return failures


def _fetch_all(
    to_fetch: dict[str, list[str]], image_dir: Path, settings: FetchSettings, progress: bool
) -> list[Failure]:
    limits = httpx.Limits(
        max_connections=settings.workers, max_keepalive_connections=settings.workers
    )
    failures: list[Failure] = []
    with (
        httpx.Client(timeout=settings.timeout, limits=limits, follow_redirects=True) as client,
        ThreadPoolExecutor(settings.workers, thread_name_prefix="hpav18") as pool,
        tqdm(total=len(to_fetch), desc="HPAv18", unit="sample", disable=not progress) as bar,
    ):
        futures = [
            pool.submit(_fetch_sample, client, image_dir, sample_id, colors, settings)
            for sample_id, colors in to_fetch.items()
        ]
        try:
            for future in as_completed(futures):
                failures.extend(future.result())
                bar.update()
                bar.set_postfix(failed=len(failures), refresh=False)
        except BaseException:  # such as Ctrl-C: the running samples finish, no new one starts
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return failures


def _fetch_sample(
    client: httpx.Client,
    image_dir: Path,
    sample_id: str,
    colors: Sequence[str],
    settings: FetchSettings,
) -> list[Failure]:
    failures = []
    for color in colors:
        url = image_url(settings.base_url, sample_id, color)
        try:
            png = _retrying(settings)(_fetch_png, client, url, color, settings.size)
        except (RetryableError, FinalError, httpx.TransportError) as error:
            failures.append(Failure(sample_id, color, _reason(error, url, settings.retries + 1)))
            continue
        write_bytes(image_dir / _png_name(sample_id, color), png)
    return failures


def _retrying(settings: FetchSettings) -> tenacity.Retrying:
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(settings.retries + 1),
        wait=tenacity.wait_exponential_jitter(
            multiplier=settings.backoff, max=settings.backoff * 60, jitter=settings.backoff
        ),
        retry=tenacity.retry_if_exception_type(
            (RetryableError, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        ),
        before_sleep=_log_retry,
        reraise=True,
    )


def _log_retry(state: tenacity.RetryCallState) -> None:
    log.debug(
        "retrying %s after attempt %d: %s",
        state.args[1],
        state.attempt_number,
        state.outcome.exception() if state.outcome else "",
    )


def _fetch_png(client: httpx.Client, url: str, color: str, size: int) -> bytes:
    """The stain at ``url`` as an 8-bit single-plane PNG of ``size`` x ``size`` px."""
    response = client.get(url)
    if response.status_code >= 500 or response.status_code == 429:
        raise RetryableError(f"HTTP {response.status_code} from {url}")
    if response.status_code != 200:
        raise FinalError(f"HTTP {response.status_code} from {url}")
    body = response.content
    if body.startswith(_JPEG_START) and missing_end_marker("JPEG", body[-64:]):
        raise RetryableError(f"{url} was cut short ({len(body)} bytes, no JPEG end marker)")
    try:
        plane = decode_channel(body, url, size, color)
    except HPAInputError as error:
        raise FinalError(str(error)) from None
    ok, encoded = cv2.imencode(".png", plane)
    if not ok:
        raise FinalError("could not encode the PNG")
    return encoded.tobytes()


def _reason(error: BaseException, url: str, attempts: int) -> str:
    if isinstance(error, FinalError):
        return str(error)
    if isinstance(error, RetryableError):
        return f"{error} ({attempts} attempts)"
    # httpx's errors (timeouts, dropped connections) do not name the URL
    return f"{type(error).__name__} from {url}: {error} ({attempts} attempts)"


def _png_name(sample_id: str, color: str) -> str:
    return channel_file_name(sample_id, color, ".png")


def _remove_stale_temporaries(image_dir: Path) -> None:
    """Temporary files of hpa.io's atomic writes that a killed run left behind."""
    for stale in image_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _write_labels(out_dir: Path, image_dir: Path, ids: np.ndarray, targets: list[str]) -> int:
    present = set(os.listdir(image_dir))
    rows = [
        (sample_id, target)
        for sample_id, target in zip(ids.tolist(), targets, strict=True)
        if all(_png_name(sample_id, color) in present for color in CHANNELS)
    ]
    write_csv(out_dir / LABELS_FILE, pd.DataFrame(rows, columns=["Id", "Target"]))
    return len(rows)


def _write_failures(out_dir: Path, failures: list[Failure]) -> None:
    path = out_dir / FAILED_FILE
    if failures:
        write_csv(path, pd.DataFrame(failures, columns=["Id", "channel", "reason"]))
    else:
        path.unlink(missing_ok=True)  # from an earlier run whose failures are now fetched


def _check_settings(settings: FetchSettings) -> None:
    if not settings.base_url.startswith(("http://", "https://")):
        raise HPAInputError(f"--base-url {settings.base_url!r}: expected an http(s):// URL")
    for name, value, lowest in (("size", settings.size, 1), ("workers", settings.workers, 1)):
        if value < lowest:
            raise HPAInputError(f"--{name} {value}: expected at least {lowest}")
    if settings.retries < 0 or settings.backoff < 0 or settings.timeout <= 0:
        raise HPAInputError(
            f"--retries {settings.retries}, --backoff {settings.backoff}, --timeout "
            f"{settings.timeout}: expected retries and backoff >= 0, timeout > 0"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.data.hpav18",
        description="Fetch the HPAv18 images of an Id,Target csv into the Kaggle layout.",
    )
    defaults = FetchSettings()
    parser.add_argument("--csv", required=True, type=Path, help="Id,Target csv of HPAv18 ids")
    parser.add_argument("--out", required=True, type=Path, help="data root to write")
    parser.add_argument("--base-url", default=defaults.base_url)
    parser.add_argument("--size", type=int, default=defaults.size, help="PNG side in px")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="parallel requests")
    parser.add_argument("--retries", type=int, default=defaults.retries, help="per image")
    parser.add_argument("--backoff", type=float, default=defaults.backoff, help="first wait, s")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="per request, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    settings = FetchSettings(
        args.base_url, args.size, args.workers, args.retries, args.backoff, args.timeout
    )
    with exit_on_input_error():
        try:
            failures = fetch_hpav18(args.csv, args.out, settings)
        except KeyboardInterrupt:
            log.error("HPAv18: interrupted; %s lists the ids complete so far", LABELS_FILE)
            return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
