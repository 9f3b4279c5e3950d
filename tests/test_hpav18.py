"""`python -m hpa.data.hpav18` against a real HTTP server on 127.0.0.1 serving tinted jpgs.

The server follows a script per URL path (503s, dropped connections, cut-off bodies, slow answers,
404s) and then answers normally; retries wait milliseconds (``backoff``), so every request loop is
bounded by ``retries`` and each wait by ``timeout``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli import REPO

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2018, HPA2021
from hpa.data.hpav18 import (
    DROPPED_FILE,
    FAILED_FILE,
    IMAGE_DIR,
    LABELS_FILE,
    LOCATIONS_FILE,
    FetchSettings,
    fetch_hpa2021,
    fetch_hpav18,
    image_url,
    main,
    map_locations,
    read_location_mapping,
)
from hpa.data.reader import read_labels_csv, tint

SOURCE_SIDE = 128
SIZE = 64
SLOW_SECONDS = 1.0  # a "slow" answer waits this long: past the client's timeout below
FAST = {"size": SIZE, "workers": 2, "retries": 3, "backoff": 0.01, "timeout": 0.5}


def stain_of(path: str) -> np.ndarray:
    """The synthetic grayscale stain served at ``path`` (smooth, different for every path)."""
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    noise = rng.integers(0, 256, (SOURCE_SIDE, SOURCE_SIDE)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 3)


def tinted_jpg(path: str, color: str | None = None) -> bytes:
    color = color or path.rsplit("_", 1)[1].removesuffix(".jpg")
    ok, encoded = cv2.imencode(".jpg", tint(stain_of(path), color), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


class ScriptedServer(ThreadingHTTPServer):
    """Serves ``tinted_jpg(path)`` for every GET; ``script[path]`` holds actions taken first, one
    per request: 503, 404, drop (headers, half the body, then the connection closes), reset (the
    connection closes before any answer), short (half the body, its length declared), slow (an
    answer after SLOW_SECONDS), or a bytes body to serve instead."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.script: dict[str, deque] = defaultdict(deque)
        self.requests: Counter[str] = Counter()
        self.connections: set[tuple[str, int]] = set()
        self.delay = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/images"

    def next_action(self, path: str, client: tuple[str, int]) -> object:
        with self.lock:
            self.requests[path] += 1
            self.connections.add(client)
            return self.script[path].popleft() if self.script[path] else "ok"


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
    server: ScriptedServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        action = self.server.next_action(self.path, self.client_address)
        time.sleep(self.server.delay)
        if action == "reset":
            self.close_connection = True
            return
        if action in ("503", "404"):
            self._answer(int(action), b"no")
            return
        if action == "slow":
            time.sleep(SLOW_SECONDS)
        body = action if isinstance(action, bytes) else tinted_jpg(self.path)
        if action == "drop":
            self._answer(200, body[: len(body) // 2], declared_length=len(body))
            self.close_connection = True
        elif action == "short":
            self._answer(200, body[: len(body) // 2])
        else:
            self._answer(200, body)

    def _answer(self, status: int, body: bytes, declared_length: int | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(declared_length or len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def write_csv(path: Path, rows: dict[str, str]) -> Path:
    pd.DataFrame({"Id": list(rows), "Target": list(rows.values())}).to_csv(path, index=False)
    return path


def path_of(sample_id: str, color: str) -> str:
    return image_url("/images", sample_id, color)


def settings(server: ScriptedServer, **changes) -> FetchSettings:
    return FetchSettings(base_url=server.url, **{**FAST, **changes})


def pngs(out: Path) -> list[Path]:
    return sorted((out / IMAGE_DIR).glob("*.png"))


def assert_nothing_half_written(out: Path, id_column: str = "Id") -> None:
    """No temporary file; every PNG decodes; train.csv lists exactly the ids with four PNGs."""
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".png", ".csv")]
    assert leftovers == []
    for png in pngs(out):
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape == (SIZE, SIZE) and image.dtype == np.uint8
    channels_of = Counter(png.stem.rsplit("_", 1)[0] for png in pngs(out))
    complete = {sample_id for sample_id, count in channels_of.items() if count == 4}
    listed = pd.read_csv(out / LABELS_FILE, dtype=str)[id_column].tolist()
    assert sorted(listed) == sorted(complete)


LABELS = {"10580_1610_C1_1": "13 25 0", "10580_1610_C1_2": "0", "1060_F3_3": "27 5"}


def test_fetches_into_the_kaggle_layout_over_reused_connections(
    server: ScriptedServer, tmp_path: Path
) -> None:
    csv = write_csv(tmp_path / "hpav18.csv", LABELS)
    assert fetch_hpav18(csv, tmp_path / "out", settings(server), progress=False) == []
    assert set(server.requests) == {path_of(i, c) for i in LABELS for c in CHANNELS}
    assert "/images/10580/1610_C1_1_yellow.jpg" in server.requests
    assert len(server.connections) <= FAST["workers"]  # 12 requests over at most 2 connections
    ids, labels = read_labels_csv(tmp_path / "out" / LABELS_FILE, HPA2018)
    assert ids.tolist() == list(LABELS)
    assert [" ".join(map(str, np.flatnonzero(row))) for row in labels] == ["0 13 25", "0", "5 27"]
    for sample_id in LABELS:
        for color in CHANNELS:
            png = tmp_path / "out" / IMAGE_DIR / f"{sample_id}_{color}.png"
            stain = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            expected = cv2.resize(
                stain_of(path_of(sample_id, color)), (SIZE, SIZE), interpolation=cv2.INTER_AREA
            )
            assert stain.shape == (SIZE, SIZE) and stain.dtype == np.uint8
            assert np.abs(stain.astype(int) - expected).mean() < 2, png
    assert not (tmp_path / "out" / FAILED_FILE).exists()
    assert_nothing_half_written(tmp_path / "out")


def test_transient_failures_are_retried(server: ScriptedServer, tmp_path: Path) -> None:
    first, second, third = LABELS
    scripted = {
        path_of(first, "red"): ["503", "503", "ok"],
        path_of(first, "green"): ["drop", "ok"],
        path_of(second, "blue"): ["short", "ok"],
        path_of(second, "yellow"): ["slow", "ok"],
        path_of(third, "red"): ["reset", "503", "ok"],
    }
    for path, actions in scripted.items():
        server.script[path].extend(actions)
    csv = write_csv(tmp_path / "hpav18.csv", LABELS)
    assert fetch_hpav18(csv, tmp_path / "out", settings(server), progress=False) == []
    for path, actions in scripted.items():
        assert server.requests[path] == len(actions), path
    assert len(pngs(tmp_path / "out")) == 12
    assert_nothing_half_written(tmp_path / "out")


def test_final_and_exhausted_failures_are_listed_and_a_second_run_fetches_only_them(
    server: ScriptedServer, tmp_path: Path
) -> None:
    first, second, third = LABELS
    server.script[path_of(first, "green")].append("404")
    server.script[path_of(second, "red")].extend(["503"] * 4)  # every attempt of retries=3
    server.script[path_of(third, "blue")].append(tinted_jpg(path_of(third, "blue"), "yellow"))
    csv = write_csv(tmp_path / "hpav18.csv", LABELS)
    out = tmp_path / "out"
    arguments = ["--csv", str(csv), "--out", str(out), "--base-url", server.url]
    arguments += [f"--{name}={value}" for name, value in FAST.items()]
    assert main(arguments) == 1

    assert server.requests[path_of(first, "green")] == 1  # a 404 is final
    assert server.requests[path_of(second, "red")] == 4
    failed = pd.read_csv(out / FAILED_FILE, dtype=str)  # in the csv's order
    assert list(failed.columns) == ["Id", "channel", "reason"]
    assert list(zip(failed["Id"], failed["channel"], strict=True)) == [
        (first, "green"),
        (second, "red"),
        (third, "blue"),
    ]
    reasons = failed["reason"].tolist()
    assert reasons[0].startswith("HTTP 404 from http://127.0.0.1")
    assert reasons[1].startswith("HTTP 503") and "4 attempts" in reasons[1]
    assert "not in the blue stain" in reasons[2] and "1060/F3_3_blue.jpg" in reasons[2]
    assert len(pngs(out)) == 9 and pd.read_csv(out / LABELS_FILE).empty
    assert_nothing_half_written(out)

    server.requests.clear()
    assert main(arguments) == 0  # the server answers normally now
    assert set(server.requests) == {
        path_of(first, "green"),
        path_of(second, "red"),
        path_of(third, "blue"),
    }
    assert pd.read_csv(out / LABELS_FILE, dtype=str)["Id"].tolist() == list(LABELS)
    assert not (out / FAILED_FILE).exists()
    assert_nothing_half_written(out)


@pytest.mark.parametrize(
    ("content", "problem", "line"),
    [
        ("Id,Target\n10580_1610_C1_1,0\n10580,1\n", "not an HPAv18 image id", 3),
        ("Id,Target\n10580_1610_C1_1,0\n1060_F3_3,28\n", "outside 0..27", 3),
        ("Id,Label\n10580_1610_C1_1,0\n", "Target", 1),
    ],
)
def test_bad_csv_is_refused_naming_the_file_and_line(
    tmp_path: Path, content: str, problem: str, line: int
) -> None:
    csv = tmp_path / "hpav18.csv"
    csv.write_text(content)
    unused = FetchSettings(base_url="http://127.0.0.1:9/images")
    with pytest.raises(HPAInputError, match=problem) as error:
        fetch_hpav18(csv, tmp_path / "out", unused, progress=False)
    assert f"{csv}, line {line}" in str(error.value)


def test_cli_refuses_bad_input_with_exit_status_2(tmp_path: Path) -> None:
    csv = tmp_path / "hpav18.csv"
    csv.write_text("Id,Target\n10580_1610_C1_1,0\nplate-only,0\n")
    command = [sys.executable, "-m", "hpa.data.hpav18", "--csv", str(csv), "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{csv}, line 3" in result.stderr and "Traceback" not in result.stderr


def fetch_command(server: ScriptedServer, csv: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "hpa.data.hpav18", "--csv", str(csv), "--out", str(out)]
    return [*command, "--base-url", server.url, *[f"--{k}={v}" for k, v in FAST.items()]]


def interrupted_run(server: ScriptedServer, command: list[str], out: Path, sig: int) -> int:
    """Run ``command``, send it ``sig`` once 20 PNGs have landed; its exit status."""
    server.delay = 0.05  # 120 requests on 2 workers: several seconds
    # A shell without job control starts background jobs with SIGINT ignored, exec keeps it
    # ignored, and Python then installs no KeyboardInterrupt handler: the child would never see
    # the Ctrl-C. A handled signal is reset to the default on exec, so handle it while forking.
    ignored_or_not = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    finally:
        signal.signal(signal.SIGINT, ignored_or_not)
    deadline = time.monotonic() + 60
    while len(pngs(out)) < 20 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(sig)
    run.communicate(timeout=30)
    server.delay = 0.0
    assert len(pngs(out)) < 120, "the run ended before the signal"
    return run.returncode


LABELS_30 = {f"{100 + index}_A{index}_1": str(index % 28) for index in range(30)}


def test_a_killed_run_leaves_nothing_half_written_and_resumes(
    server: ScriptedServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = fetch_command(server, write_csv(tmp_path / "hpav18.csv", LABELS_30), out)
    assert interrupted_run(server, command, out, signal.SIGKILL) == -signal.SIGKILL
    landed = pngs(out)
    assert len(landed) >= 20
    for png in landed:  # written atomically: every PNG there is whole
        assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED).shape == (SIZE, SIZE)
    assert not (out / LABELS_FILE).exists()
    stale = out / IMAGE_DIR / ".x_red.png.abc123.tmp"  # as a write cut by the kill leaves it
    stale.write_bytes(b"half")

    server.requests.clear()
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sum(server.requests.values()) == 120 - len(landed)  # only what was missing
    assert pd.read_csv(out / LABELS_FILE, dtype=str)["Id"].tolist() == list(LABELS_30)
    assert_nothing_half_written(out)
    assert "HPAv18: " in resumed.stderr and "sample" in resumed.stderr  # the progress bar


def test_ctrl_c_lists_the_ids_complete_so_far(server: ScriptedServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = fetch_command(server, write_csv(tmp_path / "hpav18.csv", LABELS_30), out)
    assert interrupted_run(server, command, out, signal.SIGINT) == 130
    listed = pd.read_csv(out / LABELS_FILE, dtype=str)["Id"].tolist()
    assert 5 <= len(listed) < 30
    assert_nothing_half_written(out)


# --- a 2021 index: HPA location names mapped onto the 19 classes of HPA2021 ---------------------


def test_the_2021_mapping_is_the_hosts_table() -> None:
    mapping = read_location_mapping()
    assert LOCATIONS_FILE.parent.name == "data" and LOCATIONS_FILE.is_file()  # in the package
    assert len(mapping) == 27
    assert set(mapping.values()) == set(HPA2021.class_ids)  # every class is reachable
    for class_id, name in enumerate(HPA2021.class_names[:17]):  # same-named: themselves
        assert mapping[name.lower()] == class_id, name
    assert mapping["focal adhesion sites"] == HPA2021.class_names.index("Actin filaments") == 9
    assert mapping["cell junctions"] == HPA2021.class_names.index("Plasma membrane") == 13
    assert mapping["centriolar satellite"] == HPA2021.class_names.index("Centrosome") == 12
    vesicles = HPA2021.class_names.index("Vesicles and punctate cytosolic patterns")
    for name in ("vesicles", "peroxisomes", "endosomes", "lysosomes", "lipid droplets"):
        assert mapping[name] == vesicles == 17, name
    assert mapping["cytoplasmic bodies"] == 17
    assert mapping["no staining"] == HPA2021.class_names.index("Negative") == 18
    for unmapped in ("microtubule organizing center", "nucleoli rim", "rods & rings"):
        assert unmapped not in mapping  # not in the hosts' table: left out, logged


@pytest.mark.parametrize(
    ("cell", "class_ids", "unknown"),
    [
        ("Nucleoplasm;Focal adhesion sites", [0, 9], []),
        ("Cytosol,Nucleoplasm", [0, 16], []),  # kaggle_2021.tsv joins names by commas
        ("Vesicles; Lysosomes ;NUCLEOPLASM,peroxisomes,  nucleoplasm", [0, 17], []),
        ("Cell Junctions;Mitotic   spindle", [11, 13], []),
        ("Kinetochore;Cytosol;Rods & rings", [16], ["Kinetochore", "Rods & rings"]),
        ("Nucleoli rim", [], ["Nucleoli rim"]),
        ("", [], []),
    ],
)
def test_an_index_cell_gives_sorted_class_ids_without_repeats(
    cell: str, class_ids: list[int], unknown: list[str]
) -> None:
    assert map_locations(cell, read_location_mapping()) == (class_ids, unknown)


@pytest.mark.parametrize(
    ("rows", "problem", "line"),
    [
        ("Nucleoplasm,0\nCytosol,19\n", "class_id '19' is not a class id 0..18", 3),
        ("Nucleoplasm,0\nCytosol,x\n", "class_id 'x'", 3),
        ("Nucleoplasm,0\nCytosol,-1\n", "class_id '-1'", 3),
        ("Nucleoplasm,0\n nucleoPLASM ,1\n", "listed twice", 3),
        (" ,0\n", "empty hpa_location", 2),
    ],
)
def test_a_bad_mapping_is_refused_naming_the_file_and_line(
    tmp_path: Path, rows: str, problem: str, line: int
) -> None:
    path = tmp_path / "locations.csv"
    path.write_text("hpa_location,class_id\n" + rows)
    with pytest.raises(HPAInputError, match=problem) as error:
        read_location_mapping(path)
    assert f"{path}, line {line}" in str(error.value)


INDEX = {  # {plate}_{image} -> (Label cell of the index, the Label expected in train.csv)
    "10005_921_B9_1": ("Nucleoplasm,Focal adhesion sites", "0|9"),
    "1060_F3_3": ("Vesicles;Peroxisomes;Cytosol;Lysosomes", "16|17"),
    "1770_C7_2": ("Kinetochore,No staining", "18"),
}
LEFT_OUT = {"1770_D2_1": "Kinetochore;Rods & rings", "1770_D2_2": ""}


def write_index(path: Path, base_url: str) -> Path:
    rows = {**{i: cell for i, (cell, _) in INDEX.items()}, **LEFT_OUT}
    stems = [url_stem_of(base_url, sample_id) for sample_id in rows]
    frame = pd.DataFrame({"Image": stems, "Label": list(rows.values()), "Cellline": "U-2 OS"})
    frame.to_csv(path, index=False)  # quotes the comma-joined cells, as kaggle_2021.tsv does
    return path


def url_stem_of(base_url: str, sample_id: str) -> str:
    return image_url(base_url, sample_id, "x").removesuffix("_x.jpg")


def test_a_2021_index_is_fetched_into_the_2021_layout(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = write_index(tmp_path / "kaggle_2021.csv", server.url)  # the index's URLs are used
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="hpa.data.hpav18"):
        failures = fetch_hpa2021(index, out, FetchSettings(**FAST), progress=False)
    assert failures == []
    assert set(server.requests) == {path_of(i, c) for i in INDEX for c in CHANNELS}

    ids, labels = read_labels_csv(out / LABELS_FILE, HPA2021)
    assert ids.tolist() == list(INDEX)
    assert [HPA2021.format(row) for row in labels] == [label for _, label in INDEX.values()]
    assert (out / LABELS_FILE).read_text().splitlines()[:2] == ["ID,Label", "10005_921_B9_1,0|9"]
    for sample_id in INDEX:
        for color in CHANNELS:
            png = cv2.imread(str(out / IMAGE_DIR / f"{sample_id}_{color}.png"), -1)
            expected = cv2.resize(
                stain_of(path_of(sample_id, color)), (SIZE, SIZE), interpolation=cv2.INTER_AREA
            )
            assert np.abs(png.astype(int) - expected).mean() < 2
    dropped = pd.read_csv(out / DROPPED_FILE, dtype=str, keep_default_na=False)
    assert dropped.columns.tolist() == ["ID", "reason"]
    assert dropped.values.tolist() == [
        ["1770_D2_1", "no location maps to a hpa2021 class: Kinetochore; Rods & rings"],
        ["1770_D2_2", "no location given"],
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "'Kinetochore' is not in the 2021 mapping, left out of 2 row(s)" in m for m in warnings
    )
    assert any(
        "'Rods & rings' is not in the 2021 mapping, left out of 1 row(s)" in m for m in warnings
    )
    assert any("2 row(s) left out" in m and DROPPED_FILE in m for m in warnings)
    assert not (out / FAILED_FILE).exists()
    assert_nothing_half_written(out, id_column="ID")


def test_the_cli_fetches_a_2021_index_from_another_base_url(
    server: ScriptedServer, tmp_path: Path
) -> None:
    index = write_index(tmp_path / "kaggle_2021.csv", "http://127.0.0.1:9/nowhere")
    out = tmp_path / "out"
    arguments = ["--labels", "hpa2021", "--index", str(index), "--out", str(out)]
    arguments += ["--base-url", server.url, *[f"--{k}={v}" for k, v in FAST.items()]]
    server.script[path_of("1060_F3_3", "green")].append("404")
    assert main(arguments) == 1
    assert pd.read_csv(out / LABELS_FILE, dtype=str)["ID"].tolist() == [
        "10005_921_B9_1",
        "1770_C7_2",
    ]
    assert pd.read_csv(out / FAILED_FILE, dtype=str)[["ID", "channel"]].values.tolist() == [
        ["1060_F3_3", "green"]
    ]
    server.requests.clear()
    assert main(arguments) == 0  # resumes: only the missing channel
    assert list(server.requests) == [path_of("1060_F3_3", "green")]
    ids, _ = read_labels_csv(out / LABELS_FILE, HPA2021)
    assert ids.tolist() == list(INDEX)
    assert_nothing_half_written(out, id_column="ID")


@pytest.mark.parametrize(
    ("content", "problem", "line"),
    [
        ("Image,Label\n10005/921_B9_1,Cytosol\n", "not an image URL stem", 2),
        ("Image,Label\nhttp://h/921_B9_1,Cytosol\n", "not an image URL stem", 2),
        ("Image,Label\nhttp://h/1/a_1,Cytosol\nhttp://h/1/a_1,Nucleoli\n", "also on line 2", 3),
        ("Image,Cellline\nhttp://h/1/a_1,U-2 OS\n", "missing column", 1),
    ],
)
def test_a_bad_index_is_refused_naming_the_file_and_line(
    tmp_path: Path, content: str, problem: str, line: int
) -> None:
    index = tmp_path / "kaggle_2021.csv"
    index.write_text(content)
    unused = FetchSettings(base_url="http://127.0.0.1:9/images")
    with pytest.raises(HPAInputError, match=problem) as error:
        fetch_hpa2021(index, tmp_path / "out", unused, progress=False)
    assert f"{index}, line {line}" in str(error.value)
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "arguments",
    [["--labels", "hpa2021", "--csv", "a.csv"], ["--index", "a.csv"], ["--labels", "hpa2021"]],
)
def test_the_cli_refuses_an_input_the_label_set_does_not_read(
    tmp_path: Path, arguments: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*arguments, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "reads --" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
