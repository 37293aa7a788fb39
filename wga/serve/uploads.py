"""Images people upload to look at (``POST /api/looks``): checked, then kept by content.

An upload is untrusted bytes from the network. It is accepted only when it is, all at once:

* declared ``image/jpeg``, ``image/png`` or ``image/webp`` (415 otherwise) and decoded as one of
  those three by Pillow, whatever it claims (415);
* at most :data:`MAX_UPLOAD_BYTES` (20 MB; 413);
* at most :data:`MAX_PIXELS` pixels (40 megapixels; 413) — checked from the header *before*
  anything is decoded, so a decompression bomb (a few KB of PNG that inflate to gigabytes)
  costs nothing; Pillow's own bomb limit is turned into an error too;
* complete: the whole image is decoded once (truncated or corrupt data → 400).

Then it is stored as ``<folder>/<id>.<ext>`` through :mod:`wga.atomic`, ``id`` being the first
24 hex digits of the bytes' SHA-256 (the same image uploaded twice is one file), and nothing is
written anywhere else. The folder keeps at most :data:`MAX_UPLOADS` files; the least recently
used go first.

The gateway hands a binary body to the kernel as JSON (``{"content_type", "data"}``, the bytes in
base64: see :mod:`wga.serve.guard`), so an endpoint cell receives text like every other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

from wga.atomic import write_bytes_atomic
from wga.errors import InvalidInput, NotFound

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 6,000 × 6,000 museum scan is 36 Mpx; a bomb is far beyond
MAX_UPLOADS = 200
TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
SUFFIXES = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
ID_LENGTH = 24
_ID = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")


class PayloadTooLarge(InvalidInput):
    http_status = 413


class UnsupportedType(InvalidInput):
    http_status = 415


def check_upload_id(value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise NotFound(
            f"no uploaded image {str(value)[:40]!r}: an upload id is {ID_LENGTH} hex digits, as "
            "POST /api/looks answered"
        )
    return value


def decode_body(body: Any) -> tuple[bytes, str]:
    """The upload's bytes and declared type from the request body the gateway passed on."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), str):
        raise UnsupportedType(
            "send the image itself as the request body, with Content-Type: image/jpeg, "
            "image/png or image/webp"
        )
    declared = str(body.get("content_type") or "").split(";")[0].strip().lower()
    if declared not in TYPES:
        raise UnsupportedType(
            f"Content-Type {declared[:60] or '(none)'} is not an image this server reads: send "
            "image/jpeg, image/png or image/webp"
        )
    if len(body["data"]) > (MAX_UPLOAD_BYTES * 4) // 3 + 4:
        raise PayloadTooLarge(f"the image is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        data = base64.b64decode(body["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the upload's data is not valid base64") from None
    return data, declared


def check_image(data: bytes) -> str:
    """Pillow's format name of ``data`` if it is an acceptable, complete image (see the module
    docstring); else the error that says what is wrong."""
    from PIL import Image

    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"the image is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    if not data:
        raise InvalidInput("the request has no body: send the image's bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(TYPES.values())) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise PayloadTooLarge(
                        f"the image has {width} × {height} pixels, more than "
                        f"{MAX_PIXELS / 1e6:g} megapixels: scale it down first"
                    )
                kind = str(image.format)
                image.load()  # the whole image: a truncated file fails here
        except InvalidInput:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PayloadTooLarge(
                f"the image would decode to more than {MAX_PIXELS / 1e6:g} megapixels: "
                "scale it down first"
            ) from None
        except Image.UnidentifiedImageError:
            raise UnsupportedType(
                "the body is not a JPEG, PNG or WebP image: send one of those"
            ) from None
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidInput(
                f"the image cannot be decoded ({str(error)[:120]}): it is truncated or corrupt; "
                "send the whole file"
            ) from None
    return kind


class Uploads:
    """The folder of accepted uploads (under the server's cache)."""

    def __init__(self, folder: str | os.PathLike[str], limit: int = MAX_UPLOADS) -> None:
        self.folder = Path(folder)
        self.limit = limit
        self._lock = threading.Lock()

    def accept(self, data: bytes) -> tuple[str, bool]:
        """Store ``data`` if it is an acceptable image; its id, and whether it was new."""
        kind = check_image(data)
        upload = hashlib.sha256(data).hexdigest()[:ID_LENGTH]
        target = self.folder / f"{upload}.{SUFFIXES[kind]}"
        with self._lock:
            if target.exists():
                os.utime(target)
                return upload, False
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(target, data)
            self._evict(keep=target)
        return upload, True

    def path(self, upload: str) -> Path:
        """The stored file of ``upload`` (marked used), or NotFound with what to do."""
        check_upload_id(upload)
        for suffix in SUFFIXES.values():
            path = self.folder / f"{upload}.{suffix}"
            if path.exists():
                os.utime(path)
                return path
        raise NotFound(
            f"no uploaded image {upload}: it was never uploaded here or has been dropped since "
            f"(the server keeps the last {self.limit}); upload it again with POST /api/looks"
        )

    def _evict(self, keep: Path) -> None:
        files = [p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        if len(files) <= self.limit:
            return
        files.sort(key=lambda p: p.stat().st_mtime)
        for path in files[: len(files) - self.limit]:
            if path != keep:
                path.unlink(missing_ok=True)
