"""The downloader against a local fake WGA that misbehaves in every way the real one can."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from wga_server import Art, FakeWga, catalog_csv, generate_artworks

from wga.data.catalog import Selection, decode_catalog, parse_catalog, select
from wga.data.download import (
    TEMP_MARK,
    DownloadConfig,
    RateLimiter,
    download,
    read_manifest,
    verify_file,
)
from wga.data.layout import MANIFEST_FILE

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


def records_of(arts):
    return parse_catalog(decode_catalog(catalog_csv(arts))).records


def fast_config(out: Path, server: FakeWga, **overrides) -> DownloadConfig:
    """Tiny waits so the tests stay fast; the behaviour is the same as with polite defaults."""
    settings = dict(
        base_url=server.base_url,
        workers=4,
        rate=None,
        backoff=0.02,
        backoff_max=0.1,
        progress=False,
        timeout=(2.0, 5.0),
    )
    settings.update(overrides)
    return DownloadConfig(out, **settings)


def manifest_by_key(out: Path) -> dict[str, dict[str, str]]:
    return {row["key"]: row for row in read_manifest(out / MANIFEST_FILE)}


def assert_no_corrupt_or_temporary_files(out: Path) -> None:
    images = out / "images"
    assert not list(images.glob(f"*{TEMP_MARK}*"))
    for path in images.iterdir():
        assert verify_file(path), f"{path.name} is not a whole image"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """One download of the quirky sample catalog, then a rerun of it; shared by several tests."""
    out = tmp_path_factory.mktemp("sample")
    with FakeWga() as server:
        records = records_of(server.arts)
        first = download(records, fast_config(out, server))
        manifest = manifest_by_key(out)
        hits_after_first = dict(server.hits)
        second = download(records, fast_config(out, server))
        hits_after_second = dict(server.hits)
        agents = set(server.user_agents)
    return out, records, first, manifest, hits_after_first, second, hits_after_second, agents


def test_every_selected_row_is_in_the_manifest_with_catalog_fields(sample_run):
    _, records, _, manifest, *_ = sample_run
    assert list(manifest) == [r.key for r in records]
    aachen = manifest["a/aachen/adonis"]
    assert aachen["AUTHOR"] == "AACHEN, Hans von"
    assert aachen["BORN-DIED"] == "(b. 1552, Köln, d. 1615, Praha)"
    assert aachen["file"] == "images/a__aachen__adonis.jpg"
    assert (aachen["width"], aachen["height"]) == ("48", "36")


def test_transient_server_trouble_is_retried_until_the_image_arrives(sample_run):
    _, _, summary, manifest, hits, *_ = sample_run
    for key in (
        "d/durer/1/03/1self28",  # 500 twice
        "c/cezanne/3/card2",  # 429 + Retry-After
        "b/bruegel/hunters",  # truncated JPEG once
        "c/claesz/vanitas",  # body shorter than Content-Length
        "c/claesz/herring",  # connection reset
        "d/donatell/david",  # slow
    ):
        assert manifest[key]["status"] == "ok", (key, manifest[key]["error"])
    assert hits["/art/d/durer/1/03/1self28.jpg"] == 3
    assert hits["/art/c/cezanne/3/card2.jpg"] == 2
    assert summary.ok == 11


def test_missing_images_are_recorded_and_the_artwork_page_is_tried(sample_run):
    _, _, summary, manifest, hits, *_ = sample_run
    lost = manifest["b/bosch/lost"]
    assert (lost["status"], lost["file"]) == ("missing", "")
    assert "404" in lost["error"]
    assert hits["/art/b/bosch/lost.jpg"] == 1  # a 404 is not retried
    moved = manifest["b/bosch/moved"]
    assert (moved["status"], moved["source"]) == ("ok", "page")
    assert moved["image_url"].endswith("/art/b/bosch/moved-moved.jpg")
    assert summary.missing == 1 and summary.via_page == 1


def test_an_image_that_never_decodes_is_failed_with_the_reason(sample_run):
    out, _, summary, manifest, *_ = sample_run
    broken = manifest["z/zz/broken"]
    assert broken["status"] == "failed" and "image" in broken["error"]
    assert not (out / "images" / "z__zz__broken.jpg").exists()
    assert summary.failed == 1


def test_every_file_is_a_whole_image_and_basenames_do_not_collide(sample_run):
    out, *_ = sample_run
    assert_no_corrupt_or_temporary_files(out)
    assert (out / "images" / "a__aachen__adonis.jpg").is_file()
    assert (out / "images" / "b__bassano__adonis.jpg").is_file()
    assert len(list((out / "images").iterdir())) == 11


def test_a_rerun_requests_nothing_that_is_done_and_retries_failures(sample_run):
    _, _, _, _, first_hits, second, second_hits, _ = sample_run
    new = {path: n - first_hits.get(path, 0) for path, n in second_hits.items()}
    new = {path: n for path, n in new.items() if n}
    assert set(new) == {"/art/z/zz/broken.jpg"}  # only the failure; not even the 404s
    assert second.cached == 11 and second.downloaded == 0 and second.failed == 1


def test_requests_say_who_is_asking(sample_run):
    agents = sample_run[-1]
    assert agents and all(agent.startswith("wga/") and "research" in agent for agent in agents)


def test_retry_missing_asks_again_for_earlier_404s(sample_run, tmp_path):
    out, records, *_ = sample_run
    with FakeWga() as server:
        lost = [r for r in records if r.key == "b/bosch/lost"]
        download(lost, fast_config(out, server, retry_missing=True))
        assert server.hits["/art/b/bosch/lost.jpg"] == 1


def test_resize_shrinks_large_images_to_max_side(tmp_path):
    arts = [Art("BIG, Painter", "Huge", "b/big/huge", size=(400, 200))]
    with FakeWga(arts) as server:
        summary = download(records_of(arts), fast_config(tmp_path, server, max_side=100))
    assert summary.ok == 1
    with Image.open(tmp_path / "images" / "b__big__huge.jpg") as image:
        assert image.size == (100, 50)
    row = manifest_by_key(tmp_path)["b/big/huge"]
    assert (row["width"], row["height"]) == ("100", "50")


def test_a_read_timeout_is_retried(tmp_path):
    arts = [Art("LATE, Server", "Stalled", "l/late/stalled", behaviour="stall", delay=3.0)]
    with FakeWga(arts) as server:
        summary = download(records_of(arts), fast_config(tmp_path, server, timeout=(2.0, 0.5)))
        assert server.hits["/art/l/late/stalled.jpg"] >= 2  # more if the machine is very busy
    assert summary.ok == 1


def test_an_html_page_served_as_image_never_becomes_a_file(tmp_path):
    arts = [Art("ERR, Page", "Oops", "e/err/oops", behaviour="html")]
    with FakeWga(arts) as server:
        summary = download(records_of(arts), fast_config(tmp_path, server, attempts=2))
    assert summary.failed == 1
    assert "not a readable image" in manifest_by_key(tmp_path)["e/err/oops"]["error"]
    assert not list((tmp_path / "images").iterdir())


def test_a_long_retry_after_stops_the_run_politely_and_a_rerun_resumes(tmp_path):
    arts = [
        Art("SLOW, Down", "Wait", "s/slow/wait", behaviour="ratelimit", retry_after="3600"),
        *generate_artworks(6, seed=3),
    ]
    with FakeWga(arts) as server:
        records = records_of(arts)
        summary = download(records, fast_config(tmp_path, server, workers=1, max_retry_after=5))
        assert summary.pending == len(arts) and "3600" in summary.stopped
        assert server.image_hits() == 1  # nobody kept knocking
        assert manifest_by_key(tmp_path)["s/slow/wait"]["status"] == "pending"
        again = download(records, fast_config(tmp_path, server, workers=1))
    assert again.ok == len(arts)


def test_the_rate_limit_spaces_requests_across_threads():
    limiter = RateLimiter(rate=50)  # one slot every 20 ms
    stamps: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(5):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    assert len(stamps) == 20
    assert stamps[-1] - stamps[0] >= 19 * 0.02 * 0.9
    limiter.pause(0.2)
    before = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - before >= 0.18


def test_workers_really_run_in_parallel(tmp_path):
    arts = generate_artworks(16, seed=2)
    with FakeWga(arts, latency=0.05) as server:
        download(records_of(arts), fast_config(tmp_path, server, workers=4))
        assert server.max_concurrent >= 3


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "wga", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        cwd=ROOT,
    )


def test_cli_download_reads_the_old_catalog_selects_with_filters_and_sums_up(tmp_path):
    with FakeWga() as server:
        result = run_cli(
            "download",
            "--catalog-url",
            server.old_catalog_url,  # the ";" format, with a blank and a short row
            "--out",
            str(tmp_path),
            "--base-url",
            server.base_url,
            "--type",
            "Mythological,still-life",
            "--school",
            "german,italian,dutch",
            "--limit",
            "4",
            "--rate",
            "0",
            "--backoff",
            "0.02",
            "--no-progress",
        )
    assert result.returncode == 0, result.stderr
    assert "selected 4: 4 ok" in result.stdout
    assert "Traceback" not in result.stderr
    keys = list(manifest_by_key(tmp_path))
    assert keys == ["a/aachen/adonis", "a/aachen/adonis1", "b/bassano/adonis", "c/claesz/vanitas"]
    assert (tmp_path / "summary.json").is_file()
    assert "no URL" in (tmp_path / "catalog" / "problems.txt").read_text()


def test_cli_download_exits_1_when_images_failed_and_2_on_a_typo(tmp_path):
    with FakeWga() as server:
        common = ["--catalog-url", server.catalog_url, "--out", str(tmp_path)]
        failed = run_cli(
            "download", *common, "--base-url", server.base_url, "--author", "zz broken",
            "--rate", "0", "--backoff", "0.02", "--no-progress",
        )  # fmt: skip
        typo = run_cli("download", *common, "--type", "portrets")
    assert failed.returncode == 1 and "1 failed" in failed.stdout
    assert "run the same command again" in failed.stdout
    assert typo.returncode == 2
    assert "did you mean portrait" in typo.stderr and "Traceback" not in typo.stderr


@pytest.mark.slow
def test_a_download_killed_mid_run_leaves_no_corrupt_file_and_a_rerun_completes(tmp_path):
    arts = generate_artworks(40, seed=5, size=(320, 240))
    for art in arts:
        art.behaviour, art.delay = "slow", 0.4  # ~4 s in all with 4 workers: the kill lands mid-run
    with FakeWga(arts) as server:
        args = [
            "download", "--catalog-url", server.catalog_url, "--out", str(tmp_path),
            "--base-url", server.base_url, "--workers", "4", "--rate", "0", "--no-progress",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "wga", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        images = tmp_path / "images"
        deadline = time.monotonic() + 90  # a busy machine starts Python slowly
        while time.monotonic() < deadline:
            if images.is_dir() and len(list(images.glob("*.jpg"))) >= 4:
                break
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        done_before = {p.name for p in images.glob("*.jpg")}
        assert 0 < len(done_before) < len(arts), "the kill should land mid-run"
        assert not (tmp_path / MANIFEST_FILE).exists()  # it really died before the end
        for path in images.glob("*.jpg"):
            assert verify_file(path), f"{path.name} is corrupt after the kill"

        hits_before = dict(server.hits)
        rerun = run_cli(*args)
        assert rerun.returncode == 0, rerun.stderr
        assert f"selected {len(arts)}: {len(arts)} ok" in rerun.stdout
        refetched = [
            name
            for name in done_before
            if server.hits[f"/art/{name[:-4].replace('__', '/')}.jpg"]
            > hits_before.get(f"/art/{name[:-4].replace('__', '/')}.jpg", 0)
        ]
        assert refetched == []
    assert_no_corrupt_or_temporary_files(tmp_path)
    with open(tmp_path / MANIFEST_FILE, newline="", encoding="utf-8") as handle:
        assert {row["status"] for row in csv.DictReader(handle)} == {"ok"}


def test_selection_then_download_of_a_generated_catalog_keeps_catalog_order(tmp_path):
    arts = generate_artworks(12, seed=4)
    with FakeWga(arts) as server:
        catalog = parse_catalog(decode_catalog(catalog_csv(arts)))
        chosen = select(catalog, Selection(type=["portrait", "landscape"]))
        summary = download(chosen, fast_config(tmp_path, server))
    assert summary.ok == len(chosen) > 0
    assert list(manifest_by_key(tmp_path)) == [r.key for r in chosen]


@pytest.mark.slow
def test_ctrl_c_stops_waiting_workers_at_once_and_still_writes_the_manifest(tmp_path):
    arts = generate_artworks(30, seed=6)
    with FakeWga(arts) as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = [
            "download", "--catalog-url", server.catalog_url, "--out", str(tmp_path),
            "--base-url", server.base_url, "--rate", "2", "--no-progress",
        ]  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "wga", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while server.image_hits() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGINT)
        # Slots reserved 8 s ahead are abandoned; 30 s leaves room for a busy machine.
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    statuses = [row["status"] for row in read_manifest(tmp_path / MANIFEST_FILE)]
    assert len(statuses) == len(arts)
    assert "ok" in statuses and "pending" in statuses
    assert_no_corrupt_or_temporary_files(tmp_path)


def test_a_host_that_does_not_resolve_stops_the_run_after_a_few_images(tmp_path):
    from wga.data.download import MAX_UNRESOLVED

    arts = generate_artworks(12, seed=5)
    config = DownloadConfig(
        tmp_path, base_url="http://images.invalid", workers=2, rate=None, backoff=0.02,
        backoff_max=0.1, progress=False, timeout=(2.0, 5.0),
    )  # fmt: skip
    summary = download(records_of(arts), config)
    assert "images.invalid does not resolve" in summary.stopped
    assert summary.requests <= MAX_UNRESOLVED + config.workers  # no image asked twice
    assert summary.ok == 0 and summary.pending >= len(arts) - MAX_UNRESOLVED - config.workers
    assert sum(1 for line in summary.lines() if "does not resolve" in line) == 1
