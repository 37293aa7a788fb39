"""Uploads through the real gateway: an image body reaches the kernel (the guard hands it on as
JSON), hostile ones answer 4xx JSON before or in the kernel, and only the cache gets a file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = [pytest.mark.gateway, pytest.mark.slow]

TIMEOUT = 60


def _image(kind: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def post(gateway, data: bytes, content_type: str | None) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{gateway.url}/api/looks", data=data, headers=headers, timeout=TIMEOUT)


@pytest.mark.timeout(300)
def test_an_image_body_is_uploaded_stored_in_the_cache_and_served(gateway, cache_dir):
    for kind, content_type, suffix in (("PNG", "image/png", "png"), ("WEBP", "image/webp", "webp")):
        data = _image(kind)
        response = post(gateway, data, content_type)
        assert response.status_code in (200, 201), response.text
        upload = response.json()["id"]
        assert response.json()["url"] == f"/api/looks/{upload}"
        stored = cache_dir / "looks" / "uploads" / f"{upload}.{suffix}"
        assert stored.read_bytes() == data
        served = requests.get(
            f"{gateway.url}/public/looks/uploads/{upload}.{suffix}", timeout=TIMEOUT
        )
        assert served.status_code == 200 and served.content == data
        # no probe named and none or several there: the answer says what to add
        view = requests.get(f"{gateway.url}/api/looks/{upload}", timeout=TIMEOUT)
        assert view.status_code in (400, 404) and "probe" in view.json()["error"]
    missing = requests.get(f"{gateway.url}/api/looks/{'a' * 24}?probe=x", timeout=TIMEOUT)
    assert missing.status_code == 404 and "upload it again" in missing.json()["error"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("label", "body", "content_type", "status"),
    [
        ("over 20 MB", b"\0" * (20 * 1024 * 1024 + 1), "image/png", 413),
        ("a GIF", b"GIF89a" + b"\0" * 40, "image/gif", 415),
        ("JSON instead of an image", b'{"data": "x"}', "application/json", 415),
        ("no Content-Type", b"\x89PNG\r\n", None, 415),
        (
            "a PNG claiming to be a JPEG but cut short",
            b"\x89PNG\r\n\x1a\n" + b"\0" * 30,
            "image/jpeg",
            415,
        ),
        ("a truncated JPEG", None, "image/jpeg", 400),
    ],
)
def test_hostile_uploads_answer_4xx_json_and_write_nothing(
    gateway, cache_dir, label, body, content_type, status
):
    if body is None:
        whole = _image("JPEG")
        body = whole[: len(whole) // 2]
    folder = cache_dir / "looks" / "uploads"
    before = sorted(folder.iterdir()) if folder.exists() else []
    response = post(gateway, body, content_type)
    assert response.status_code == status, (label, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"], label
    after = sorted(folder.iterdir()) if folder.exists() else []
    assert after == before, label
    assert requests.get(f"{gateway.url}/api/status", timeout=TIMEOUT).ok  # still healthy
