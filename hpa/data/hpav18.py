"""Fetch HPA's public images into the Kaggle layout: HPAv18 (2018 classes) or a 2021 index.

    python -m hpa.data.hpav18 --csv HPAv18RBGY_wodpl.csv --out DIR [--base-url URL] [--size 512]
        [--workers 8] [--retries 5] [--backoff 1] [--timeout 60]
    python -m hpa.data.hpav18 --labels hpa2021 --index kaggle_2021.tsv --out DIR [--base-url URL]
        [--locations hpa2021_locations.csv] [...]

``--labels hpa2018`` (the default): the csv (``Id,Target``, ids such as ``10580_1610_C1_1``;
HPAv18 is labelled with the 2018 classes, ``HPA2018``) lists the images; image ``{Id}``'s
stain ``{color}`` is HPA's tinted jpg ``{base-url}/{plate}/{rest}_{color}.jpg``, where ``plate`` is
the id's part before its first ``_``.

``--labels hpa2021``: the index (a csv with an ``Image`` column of URL stems such as
``https://images.proteinatlas.org/10005/921_B9_1`` and a ``Label`` column of HPA location names
joined by ``,`` or ``;``, as in the 2021 teams' ``kaggle_2021.tsv``) lists the images; image
``{plate}_{rest}``'s stain ``{color}`` is ``{Image}_{color}.jpg`` (or, with ``--base-url``,
``{base-url}/{plate}/{rest}_{color}.jpg``). The location names become 2021 classes
(``HPA2021``) through ``hpa2021_locations.csv`` (``read_location_mapping``); a name not in it is
left out of its row (logged), and a row left with no class is not fetched (``dropped.csv``).

Each jpg is verified to be complete (its JPEG end marker) and decoded, read through its stain's
plane (``hpa.data.reader``, as every channel file is), resized to ``--size`` px and written
atomically as an 8-bit single-plane PNG::

    DIR/train/{Id}_{color}.png   the four stains of each id
    DIR/train.csv                Id,Target (hpa2021: ID,Label) of every id whose four channels
                                 landed (csv order)
    DIR/failed.csv               Id (hpa2021: ID),channel,reason of each channel that could not
                                 be fetched
    DIR/dropped.csv              ID,reason of each index row left out (hpa2021 only)

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
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pandas as pd
import tenacity
from tqdm import tqdm

from hpa.core.errors import HPAInputError, exit_on_input_error
from hpa.core.io import write_bytes, write_csv
from hpa.core.labels import CHANNELS, HPA2018, HPA2021, LabelSet
from hpa.data.reader import (
    channel_file_name,
    decode_channel,
    read_csv_table,
    read_labels_csv,
)
from hpa.data.validate import missing_end_marker

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://v18.proteinatlas.org/images"
"""Where the 2018 competition teams fetched HPAv18 from."""

LOCATIONS_FILE = Path(__file__).with_name("hpa2021_locations.csv")
"""HPA location name -> 2021 class id (``hpa_location,class_id``), shipped with the package.

The table the 2021 competition's hosts published with their index of HPA's public images
(Kaggle notebook "HPA public data download and HPACellSeg" by lnhtrang, its ``all_locations``;
the 2nd-place team reproduced it in jxzly/AllDataAreExt-Galixir-Kaggle-HPA-2021-Solution,
S1_external_data_download.py). docs/hpav18.md lists it and what it leaves out."""

IMAGE_DIR = "train"
LABELS_FILE = "train.csv"
FAILED_FILE = "failed.csv"
DROPPED_FILE = "dropped.csv"

INDEX_IMAGE_COLUMN = "Image"
INDEX_LOCATIONS_COLUMN = "Label"

_JPEG_START = b"\xff\xd8"
_HPAV18_ID = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9_-]+")  # {plate}_{rest}, safe in a URL
_PLATE = re.compile(r"[A-Za-z0-9]+")
_IMAGE = re.compile(r"[A-Za-z0-9_-]+")
_LOCATION_SEPARATOR = re.compile(r"[,;]")


class Failure(NamedTuple):
    sample_id: str
    channel: str
    reason: str


class Dropped(NamedTuple):
    """An index row left out before fetching: no location of it maps to a class."""

    sample_id: str
    reason: str


@dataclass(frozen=True)
class Listing:
    """What to fetch: each id's label cell and image URL stem (``{stem}_{color}.jpg``)."""

    title: str
    label_set: LabelSet
    ids: list[str]
    labels: list[str]
    stems: list[str]
    dropped: list[Dropped] = field(default_factory=list)


class RetryableError(Exception):
    """A problem worth another request: a 5xx or 429 answer, or an image cut short."""


class FinalError(Exception):
    """A problem another request will not fix: a 404 or an image that is not the stain's."""


@dataclass(frozen=True)
class FetchSettings:
    """``base_url`` None: DEFAULT_BASE_URL for an HPAv18 csv, the index's URLs for a 2021 index."""

    base_url: str | None = None
    size: int = 512
    workers: int = 8
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0


def url_stem(base_url: str, sample_id: str) -> str:
    plate, _, rest = sample_id.partition("_")
    return f"{base_url.rstrip('/')}/{plate}/{rest}"


def image_url(base_url: str, sample_id: str, color: str) -> str:
    return f"{url_stem(base_url, sample_id)}_{color}.jpg"


def read_hpav18_csv(csv_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(ids, their Target strings) of an HPAv18 ``Id,Target`` csv; each id ``{plate}_{rest}``."""
    csv_path = Path(csv_path)
    ids, labels = read_labels_csv(csv_path, HPA2018)
    malformed = [row for row, sample_id in enumerate(ids) if not _HPAV18_ID.fullmatch(sample_id)]
    if malformed:
        line = read_csv_table(csv_path, (HPA2018.id_column,)).index[malformed[0]]
        raise HPAInputError(
            f"{csv_path}, line {line}: Id {ids[malformed[0]]!r} is not an HPAv18 image id "
            f"({{plate}}_{{image}}, such as 10580_1610_C1_1); {len(malformed)} such row(s)"
        )
    return ids, [HPA2018.format(row) for row in labels]


def hpav18_listing(csv_path: str | Path, base_url: str) -> Listing:
    ids, targets = read_hpav18_csv(csv_path)
    stems = [url_stem(base_url, sample_id) for sample_id in ids.tolist()]
    return Listing("HPAv18", HPA2018, ids.tolist(), targets, stems)


def location_key(name: str) -> str:
    """How location names are matched: case and runs of whitespace do not count."""
    return " ".join(name.split()).casefold()


def read_location_mapping(path: str | Path = LOCATIONS_FILE) -> dict[str, int]:
    """{location_key(HPA location name): 2021 class id} of an ``hpa_location,class_id`` csv.

    Every name non-empty and listed once (by ``location_key``), every class id in 0..18; a
    problem is an HPAInputError naming the file and line.
    """
    path = Path(path)
    table = read_csv_table(path, ("hpa_location", "class_id"))
    if table.empty:
        raise HPAInputError(f"{path}: the file has a header but no rows")
    mapping: dict[str, int] = {}
    for line, name, class_id in zip(
        table.index, table["hpa_location"], table["class_id"], strict=True
    ):
        key = location_key(name)
        if not key:
            raise HPAInputError(f"{path}, line {line}: empty hpa_location")
        if key in mapping:
            raise HPAInputError(f"{path}, line {line}: hpa_location {name!r} is listed twice")
        mapping[key] = _class_id(path, line, class_id)
    return mapping


def _class_id(path: Path, line: int, text: str) -> int:
    last = HPA2021.num_classes - 1
    if not text.strip().isdigit() or int(text) > last:
        raise HPAInputError(
            f"{path}, line {line}: class_id {text!r} is not a class id 0..{last} "
            f"(label set {HPA2021.name})"
        )
    return int(text)


def map_locations(cell: str, mapping: Mapping[str, int]) -> tuple[list[int], list[str]]:
    """(sorted class ids without repeats, location names not in ``mapping``) of a ``Label``
    cell of HPA location names joined by ``,`` or ``;``."""
    names = [" ".join(name.split()) for name in _LOCATION_SEPARATOR.split(cell)]
    names = [name for name in names if name]
    class_ids = sorted({mapping[location_key(n)] for n in names if location_key(n) in mapping})
    unknown = [name for name in names if location_key(name) not in mapping]
    return class_ids, unknown


def index_image_id(stem: str) -> str | None:
    """``{plate}_{image}`` of an index's image URL stem ``http(s)://host/.../{plate}/{image}``;
    None when the stem is not such a URL."""
    parts = urlsplit(stem)
    segments = parts.path.split("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or len(segments) < 3:
        return None
    plate, image = segments[-2:]
    if not _PLATE.fullmatch(plate) or not _IMAGE.fullmatch(image):
        return None
    return f"{plate}_{image}"


def hpa2021_listing(
    index_path: str | Path, mapping: Mapping[str, int], base_url: str | None = None
) -> Listing:
    """The images of a 2021 index (``Image``, ``Label`` columns) and their 2021 classes.

    A location name not in ``mapping`` is left out of its row (one warning per name); a row
    left with no class is dropped with its reason. Image URLs: the index's own, or ``base_url``
    with each image's plate and name.
    """
    index_path = Path(index_path)
    table = read_csv_table(index_path, (INDEX_IMAGE_COLUMN, INDEX_LOCATIONS_COLUMN))
    if table.empty:
        raise HPAInputError(f"{index_path}: the file has a header but no rows")
    ids: list[str] = []
    labels: list[str] = []
    stems: list[str] = []
    dropped: list[Dropped] = []
    line_of: dict[str, int] = {}
    unknown_rows: Counter[str] = Counter()
    for line, stem, cell in zip(
        table.index, table[INDEX_IMAGE_COLUMN], table[INDEX_LOCATIONS_COLUMN], strict=True
    ):
        stem = stem.strip()
        sample_id = _index_row_id(index_path, line, stem, line_of)
        class_ids, unknown = map_locations(cell, mapping)
        unknown_rows.update(set(unknown))
        if not class_ids:
            dropped.append(Dropped(sample_id, _drop_reason(unknown)))
            continue
        ids.append(sample_id)
        labels.append(HPA2021.separator.join(str(i) for i in class_ids))
        stems.append(stem if base_url is None else url_stem(base_url, sample_id))
    for name, rows in sorted(unknown_rows.items()):
        log.warning(
            "%s: location %r is not in the 2021 mapping, left out of %d row(s)",
            index_path,
            name,
            rows,
        )
    return Listing("HPA 2021 index", HPA2021, ids, labels, stems, dropped)


def _index_row_id(path: Path, line: int, stem: str, line_of: dict[str, int]) -> str:
    sample_id = index_image_id(stem)
    if sample_id is None:
        raise HPAInputError(
            f"{path}, line {line}: {INDEX_IMAGE_COLUMN} {stem!r} is not an image URL stem "
            "(http(s)://host/{plate}/{image}, such as "
            "https://images.proteinatlas.org/10005/921_B9_1)"
        )
    if sample_id in line_of:
        raise HPAInputError(
            f"{path}, line {line}: image {sample_id} is also on line {line_of[sample_id]}"
        )
    line_of[sample_id] = line
    return sample_id


def _drop_reason(unknown: list[str]) -> str:
    if not unknown:
        return "no location given"
    return f"no location maps to a {HPA2021.name} class: {'; '.join(unknown)}"


def fetch_hpav18(
    csv_path: str | Path, out_dir: str | Path, settings: FetchSettings, progress: bool = True
) -> list[Failure]:
    """Fetch every channel of the csv's ids not yet in ``out_dir``; write train.csv (and
    failed.csv when some failed). Returns the channels that failed."""
    _check_settings(settings)
    listing = hpav18_listing(csv_path, settings.base_url or DEFAULT_BASE_URL)
    return fetch_listing(listing, out_dir, settings, progress)


def fetch_hpa2021(
    index_path: str | Path,
    out_dir: str | Path,
    settings: FetchSettings,
    progress: bool = True,
    locations: str | Path = LOCATIONS_FILE,
) -> list[Failure]:
    """Fetch every channel of the 2021 index's images that have a 2021 class and are not yet
    in ``out_dir``; write train.csv (``ID,Label``), dropped.csv and failed.csv as they apply.
    Returns the channels that failed."""
    _check_settings(settings)
    mapping = read_location_mapping(locations)
    listing = hpa2021_listing(index_path, mapping, settings.base_url)
    return fetch_listing(listing, out_dir, settings, progress)


def fetch_listing(
    listing: Listing, out_dir: str | Path, settings: FetchSettings, progress: bool = True
) -> list[Failure]:
    """Fetch every channel of ``listing`` not yet in ``out_dir``; write its files."""
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(image_dir)
    _write_dropped(out_dir, listing)
    present = set(os.listdir(image_dir))
    to_fetch = {}
    for sample_id, stem in zip(listing.ids, listing.stems, strict=True):
        colors = [c for c in CHANNELS if _png_name(sample_id, c) not in present]
        if colors:
            to_fetch[sample_id] = (stem, colors)
    log.info(
        "%s: %d of %d ids to fetch (%d channels) with %d workers",
        listing.title,
        len(to_fetch),
        len(listing.ids),
        sum(len(colors) for _, colors in to_fetch.values()),
        settings.workers,
    )
    failures: list[Failure] = []
    try:
        failures = _fetch_all(listing.title, to_fetch, image_dir, settings, progress)
    finally:  # also when interrupted: train.csv lists the ids complete so far
        complete = _write_labels(out_dir, image_dir, listing)
    row_of = {sample_id: row for row, sample_id in enumerate(to_fetch)}
    failures.sort(key=lambda failure: (row_of[failure.sample_id], CHANNELS.index(failure.channel)))
    _write_failures(out_dir, failures, listing.label_set.id_column)
    _log_outcome(listing, out_dir, complete, failures)
    return failures


def _log_outcome(listing: Listing, out_dir: Path, complete: int, failures: list[Failure]) -> None:
    log.info("%s: %d of %d ids complete in %s", listing.title, complete, len(listing.ids), out_dir)
    if listing.dropped:
        log.warning(
            "%s: %d row(s) left out (no %s class), listed in %s",
            listing.title,
            len(listing.dropped),
            listing.label_set.name,
            out_dir / DROPPED_FILE,
        )
    if failures:
        failed_ids = len({failure.sample_id for failure in failures})
        log.error(
            "%s: %d channel(s) of %d id(s) failed, listed in %s; run again to retry them",
            listing.title,
            len(failures),
            failed_ids,
            out_dir / FAILED_FILE,
        )


def _fetch_all(
    title: str,
    to_fetch: dict[str, tuple[str, list[str]]],
    image_dir: Path,
    settings: FetchSettings,
    progress: bool,
) -> list[Failure]:
    limits = httpx.Limits(
        max_connections=settings.workers, max_keepalive_connections=settings.workers
    )
    failures: list[Failure] = []
    with (
        httpx.Client(timeout=settings.timeout, limits=limits, follow_redirects=True) as client,
        ThreadPoolExecutor(settings.workers, thread_name_prefix="hpav18") as pool,
        tqdm(total=len(to_fetch), desc=title, unit="sample", disable=not progress) as bar,
    ):
        futures = [
            pool.submit(_fetch_sample, client, image_dir, sample_id, stem, colors, settings)
            for sample_id, (stem, colors) in to_fetch.items()
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
    stem: str,
    colors: Sequence[str],
    settings: FetchSettings,
) -> list[Failure]:
    failures = []
    for color in colors:
        url = f"{stem}_{color}.jpg"
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
    """Temporary files of hpa.core.io's atomic writes that a killed run left behind."""
    for stale in image_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _write_labels(out_dir: Path, image_dir: Path, listing: Listing) -> int:
    present = set(os.listdir(image_dir))
    rows = [
        (sample_id, labels)
        for sample_id, labels in zip(listing.ids, listing.labels, strict=True)
        if all(_png_name(sample_id, color) in present for color in CHANNELS)
    ]
    columns = [listing.label_set.id_column, listing.label_set.column]
    write_csv(out_dir / LABELS_FILE, pd.DataFrame(rows, columns=columns))
    return len(rows)


def _write_dropped(out_dir: Path, listing: Listing) -> None:
    path = out_dir / DROPPED_FILE
    if listing.dropped:
        columns = [listing.label_set.id_column, "reason"]
        write_csv(path, pd.DataFrame(listing.dropped, columns=columns))
    else:
        path.unlink(missing_ok=True)  # from an earlier run of another index


def _write_failures(out_dir: Path, failures: list[Failure], id_column: str) -> None:
    path = out_dir / FAILED_FILE
    if failures:
        write_csv(path, pd.DataFrame(failures, columns=[id_column, "channel", "reason"]))
    else:
        path.unlink(missing_ok=True)  # from an earlier run whose failures are now fetched


def _check_settings(settings: FetchSettings) -> None:
    base_url = settings.base_url
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise HPAInputError(f"--base-url {base_url!r}: expected an http(s):// URL")
    for name, value, lowest in (("size", settings.size, 1), ("workers", settings.workers, 1)):
        if value < lowest:
            raise HPAInputError(f"--{name} {value}: expected at least {lowest}")
    if settings.retries < 0 or settings.backoff < 0 or settings.timeout <= 0:
        raise HPAInputError(
            f"--retries {settings.retries}, --backoff {settings.backoff}, --timeout "
            f"{settings.timeout}: expected retries and backoff >= 0, timeout > 0"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.data.hpav18",
        description="Fetch HPA's public images into the Kaggle layout: the HPAv18 ids of an "
        "Id,Target csv (--labels hpa2018), or the images of a 2021 index (--labels hpa2021).",
    )
    defaults = FetchSettings()
    parser.add_argument(
        "--labels",
        choices=(HPA2018.name, HPA2021.name),
        default=HPA2018.name,
        help="label set written: hpa2018 reads --csv, hpa2021 reads --index",
    )
    parser.add_argument("--csv", type=Path, help="hpa2018: Id,Target csv of HPAv18 ids")
    parser.add_argument(
        "--index", type=Path, help="hpa2021: csv of image URL stems (Image) and locations (Label)"
    )
    parser.add_argument(
        "--locations",
        type=Path,
        default=LOCATIONS_FILE,
        help="hpa2021: hpa_location,class_id csv (default: the one shipped with hpa)",
    )
    parser.add_argument("--out", required=True, type=Path, help="data root to write")
    parser.add_argument(
        "--base-url",
        help=f"hpa2018: default {DEFAULT_BASE_URL}; hpa2021: default the index's own URLs",
    )
    parser.add_argument("--size", type=int, default=defaults.size, help="PNG side in px")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="parallel requests")
    parser.add_argument("--retries", type=int, default=defaults.retries, help="per image")
    parser.add_argument("--backoff", type=float, default=defaults.backoff, help="first wait, s")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="per request, s")
    return parser


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    wanted, unwanted = ("csv", "index") if args.labels == HPA2018.name else ("index", "csv")
    if getattr(args, wanted) is None or getattr(args, unwanted) is not None:
        parser.error(f"--labels {args.labels} reads --{wanted} (and not --{unwanted})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_inputs(parser, args)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    settings = FetchSettings(
        args.base_url, args.size, args.workers, args.retries, args.backoff, args.timeout
    )
    with exit_on_input_error():
        try:
            if args.labels == HPA2018.name:
                failures = fetch_hpav18(args.csv, args.out, settings)
            else:
                failures = fetch_hpa2021(args.index, args.out, settings, locations=args.locations)
        except KeyboardInterrupt:
            log.error("interrupted; %s lists the ids complete so far", args.out / LABELS_FILE)
            return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
