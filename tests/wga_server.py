"""A local stand-in for www.wga.hu, with synthetic data and the site's bad days on demand.

It serves the catalog zip in both historical formats (``;`` and quoted ``,``, Latin-1), artwork
HTML pages that link their image, and synthetic JPEGs. Each artwork can misbehave in one way:

=============  ==============================================================================
behaviour      what the server does for its image
=============  ==============================================================================
``ok``         200 with a small JPEG
``missing``    404 with an HTML page; the artwork page is 404 too
``moved``      404 for the rewritten URL, but the artwork page links the image elsewhere
``flaky``      500 for the first ``times`` requests, then the image
``ratelimit``  429 with ``Retry-After: retry_after`` for the first ``times`` requests
``slow``       waits ``delay`` seconds before answering
``stall``      waits ``delay`` seconds before answering the first ``times`` requests
``truncated``  a JPEG cut in half (consistent Content-Length) the first ``times`` requests
``broken``     always a JPEG cut in half
``shortbody``  announces the full length, sends half, closes (first ``times`` requests)
``reset``      closes the connection with a TCP reset (first ``times`` requests)
``html``       200 with an HTML error page instead of an image, always
=============  ==============================================================================

Used by the tests and by ``benchmarks/download_speed.py``; never touches the network.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import random
import socket
import struct
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

HEADER = (
    "AUTHOR",
    "BORN-DIED",
    "TITLE",
    "DATE",
    "TECHNIQUE",
    "LOCATION",
    "URL",
    "FORM",
    "TYPE",
    "SCHOOL",
    "TIMEFRAME",
)
CATALOG_PATH = "/database/download/data_txt.zip"  # newer format: quoted ","
OLD_CATALOG_PATH = "/database/download/old/data_txt.zip"  # older format: ";"


@dataclass
class Art:
    """One synthetic catalog row and how the server treats its image."""

    author: str
    title: str
    path: str  # below /html/, without extension: "a/aachen/adonis"
    form: str = "painting"
    type: str = "portrait"
    school: str = "Italian"
    timeframe: str = "1501-1550"
    born_died: str = "(b. 1500, Firenze, d. 1550, Roma)"
    date: str = "c. 1520"
    technique: str = "Oil on canvas, 68 x 95 cm"
    location: str = "Private collection"
    behaviour: str = "ok"
    times: int = 1
    delay: float = 0.0
    size: tuple[int, int] = (48, 36)
    retry_after: str = "1"

    def row(self, host: str) -> list[str]:
        url = f"{host}/html/{self.path}.html"
        return [
            self.author,
            self.born_died,
            self.title,
            self.date,
            self.technique,
            self.location,
            url,
            self.form,
            self.type,
            self.school,
            self.timeframe,
        ]


def sample_artworks() -> list[Art]:
    """A small catalog with every quirk the downloader must survive."""
    return [
        Art(
            "AACHEN, Hans von",
            "Venus and Adonis",
            "a/aachen/adonis",
            type="mythological",
            school="German",
            timeframe="1601-1650",
            born_died="(b. 1552, Köln, d. 1615, Praha)",
            date="1574-88",
            location="Fogg Art Museum, Harvard University, Cambridge",
        ),
        Art(
            "AACHEN, Hans von",
            "Venus and Adonis (detail)",
            "a/aachen/adonis1",
            type="mythological",
            school="German",
            timeframe="1601-1650",
        ),
        # Same basename as Aachen's: file names must come from the full path.
        Art("BASSANO, Jacopo", "Venus and Adonis", "b/bassano/adonis", type="mythological"),
        Art(
            "DÜRER, Albrecht",
            "Self-Portrait in a Fur-Collared Robe",
            "d/durer/1/03/1self28",
            school="German",
            timeframe="1501-1550",
            location="Alte Pinakothek, München",
            behaviour="flaky",
            times=2,
        ),
        Art(
            "CÉZANNE, Paul",
            'The "Card Players"; second version',
            "c/cezanne/3/card2",
            type="genre",
            school="French",
            timeframe="1851-1900",
            technique="Oil on canvas; 47 x 57 cm",
            behaviour="ratelimit",
        ),
        Art("BOSCH, Hieronymus", "Lost Panel", "b/bosch/lost", behaviour="missing"),
        Art("BOSCH, Hieronymus", "Moved Panel", "b/bosch/moved", behaviour="moved"),
        Art("BRUEGEL, Pieter", "Hunters in the Snow", "b/bruegel/hunters", type="landscape",
            school="Flemish", behaviour="truncated", size=(200, 150)),
        Art("CLAESZ, Pieter", "Vanitas", "c/claesz/vanitas", type="still-life", school="Dutch",
            timeframe="1601-1650", behaviour="shortbody"),
        Art("CLAESZ, Pieter", "Still-Life with Herring", "c/claesz/herring", type="still-life",
            school="Dutch", timeframe="1601-1650", behaviour="reset"),
        Art("DONATELLO", "David", "d/donatell/david", form="sculpture", type="religious",
            timeframe="1401-1450", technique="Bronze", behaviour="slow", delay=0.3),
        Art("GIOTTO di Bondone", "Madonna", "g/giotto/madonna", type="religious",
            timeframe="0751-0800"),
        Art("ZZ Broken", "Always Broken", "z/zz/broken", behaviour="broken", size=(200, 150)),
    ]  # fmt: skip


def generate_artworks(
    n: int,
    seed: int = 0,
    *,
    types: Sequence[str] = ("portrait", "landscape", "still-life"),
    details: float = 0.2,
    size: tuple[int, int] = (32, 24),
) -> list[Art]:
    """``n`` well-behaved rows spread over authors and types; some are details of others."""
    rng = random.Random(seed)
    schools = ("Italian", "Dutch", "Flemish", "French", "German", "Spanish")
    arts: list[Art] = []
    while len(arts) < n:
        index = len(arts)
        author_id = rng.randrange(max(1, n // 6))
        author = f"PAINTER{author_id:04d}, Jan"
        folder = f"p/painter{author_id:04d}"
        if arts and rng.random() < details:
            base = rng.choice(arts)
            number = sum(1 for a in arts if a.path.startswith(base.path)) + 1
            arts.append(
                Art(
                    base.author,
                    f"{base.title} (detail)",
                    f"{base.path}{number}",
                    type=base.type,
                    school=base.school,
                    timeframe=base.timeframe,
                    size=size,
                )
            )
            continue
        arts.append(
            Art(
                author,
                f"Work {index}",
                f"{folder}/{index:05d}work",
                type=types[rng.randrange(len(types))],
                school=schools[author_id % len(schools)],
                timeframe=f"{1401 + 50 * (author_id % 8)}-{1450 + 50 * (author_id % 8)}",
                size=size,
            )
        )
    return arts


def catalog_csv(
    arts: Iterable[Art],
    *,
    delimiter: str = ",",
    host: str = "https://www.wga.hu",
    quirks: bool = False,
) -> bytes:
    """The catalog as the WGA writes it: Latin-1 bytes, ``,`` (quoted) or ``;`` delimited.

    With ``quirks``, a blank line and a short row are added, as found in real copies.
    """
    out = io.StringIO(newline="")
    quoting = csv.QUOTE_MINIMAL
    writer = csv.writer(
        out, delimiter=delimiter, quotechar='"', quoting=quoting, lineterminator="\r\n"
    )
    writer.writerow(HEADER)
    for number, art in enumerate(arts):
        writer.writerow(art.row(host))
        if quirks and number == 1:
            out.write("\r\n")
            writer.writerow(["TRUNCATED, Row", "(b. 1600)"])
    return out.getvalue().encode("latin-1", errors="replace")


def catalog_zip(csv_bytes: bytes, member: str = "catalog.csv") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, csv_bytes)
    return buffer.getvalue()


@functools.lru_cache(maxsize=64)
def synthetic_jpeg(seed: int, width: int = 48, height: int = 36) -> bytes:
    """A small, valid JPEG whose colours depend on ``seed`` (never a real WGA image)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        colour = tuple(rng.randrange(256) for _ in range(3))
        image.paste(colour, (x0, y0, min(width, x0 + width // 3), min(height, y0 + height // 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _seed(path: str) -> int:
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(path)) % 4096


class FakeWga:
    """The server. Use as a context manager; ``base_url`` is where it listens."""

    def __init__(self, arts: Sequence[Art] | None = None, *, latency: float = 0.0) -> None:
        self.arts = list(sample_artworks() if arts is None else arts)
        self.by_path = {art.path: art for art in self.arts}
        self.latency = latency
        self.hits: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self.lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._zips: dict[str, bytes] = {}

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def catalog_url(self) -> str:
        return self.base_url + CATALOG_PATH

    @property
    def old_catalog_url(self) -> str:
        return self.base_url + OLD_CATALOG_PATH

    def image_hits(self) -> int:
        with self.lock:
            return sum(n for path, n in self.hits.items() if path.startswith("/art/"))

    def catalog_bytes(self, path: str) -> bytes:
        if path not in self._zips:
            if path == CATALOG_PATH:
                data = catalog_csv(self.arts, delimiter=",", host="https://www.wga.hu")
            else:
                data = catalog_csv(self.arts, delimiter=";", host="http://www.wga.hu", quirks=True)
            self._zips[path] = catalog_zip(data)
        return self._zips[path]

    def __enter__(self) -> FakeWga:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _make_handler(fake: FakeWga) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms) on every keep-alive request. Real servers disable it.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def not_found(self) -> None:
            page = b"<html><body><h1>404 Not Found</h1><p>The page is gone.</p></body></html>"
            self.send(404, page, "text/html")

        def reset(self) -> None:
            # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with fake.lock:
                fake.hits[path] += 1
                fake.user_agents.add(self.headers.get("User-Agent", ""))
                count = fake.hits[path]
                fake.concurrent += 1
                fake.max_concurrent = max(fake.max_concurrent, fake.concurrent)
            try:
                if fake.latency:
                    time.sleep(fake.latency)
                self.answer(path, count)
            finally:
                with fake.lock:
                    fake.concurrent -= 1

        def answer(self, path: str, count: int) -> None:
            if path == "/_stats":  # for benchmarks running the server in another process
                stats = {"image_hits": fake.image_hits(), "max_concurrent": fake.max_concurrent}
                self.send(200, json.dumps(stats).encode(), "application/json")
                return
            if path in (CATALOG_PATH, OLD_CATALOG_PATH):
                self.send(200, fake.catalog_bytes(path), "application/zip")
                return
            if path.startswith("/html/") and path.endswith(".html"):
                art = fake.by_path.get(path[len("/html/") : -len(".html")])
                if art is None or art.behaviour == "missing":
                    self.not_found()
                    return
                target = (
                    f"/art/{art.path}-moved.jpg"
                    if art.behaviour == "moved"
                    else f"/art/{art.path}.jpg"
                )
                page = (
                    f'<html><head><meta charset="utf-8"><title>{art.title}</title></head><body>'
                    f'<a href="/index.html">Home</a> <a href="../../../preview/x.gif">x</a>'
                    f'<table><tr><td><a href="{target}"><img src="/detail/{art.path}.jpg"></a>'
                    f"</td></tr></table><p>{art.author}: {art.title}</p></body></html>"
                )
                self.send(200, page.encode("utf-8"), "text/html; charset=utf-8")
                return
            if not (path.startswith("/art/") and path.endswith(".jpg")):
                self.not_found()
                return
            name = path[len("/art/") : -len(".jpg")]
            moved = name.endswith("-moved")
            art = fake.by_path.get(name.removesuffix("-moved"))
            if art is None or (art.behaviour == "moved") != moved or art.behaviour == "missing":
                self.not_found()
                return
            image = synthetic_jpeg(_seed(art.path), *art.size)
            early = count <= art.times
            behaviour = art.behaviour
            if behaviour == "slow" or (behaviour == "stall" and early):
                time.sleep(art.delay)
            elif behaviour == "flaky" and early:
                self.send(500, b"<html>Internal Server Error</html>", "text/html")
                return
            elif behaviour == "ratelimit" and early:
                self.send(429, b"slow down", "text/plain", Retry_After=art.retry_after)
                return
            elif behaviour == "broken" or (behaviour == "truncated" and early):
                self.send(200, image[: len(image) // 2], "image/jpeg")
                return
            elif behaviour == "shortbody" and early:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image[: len(image) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            elif behaviour == "reset" and early:
                self.reset()
                return
            elif behaviour == "html":
                self.send(200, b"<html><body>Sorry</body></html>", "text/html")
                return
            self.send(200, image, "image/jpeg")

    return Handler


def main() -> None:
    """Serve the sample catalog, or ``--generate N`` rows, until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description="a local fake www.wga.hu")
    parser.add_argument("--generate", type=int, help="serve N generated rows instead of the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(32, 24), metavar=("W", "H"))
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    args = parser.parse_args()
    arts = (
        generate_artworks(args.generate, args.seed, size=tuple(args.size))
        if args.generate
        else None
    )
    with FakeWga(arts, latency=args.latency) as server:
        print(server.base_url, flush=True)  # first line: where to connect
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # python tests/wga_server.py [--generate N] [--latency S]
    main()
