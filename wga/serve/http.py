"""The shapes of a REST exchange: the gateway's request in, :class:`Response` out, and the
checks every endpoint shares (JSON bodies, typed fields, query arguments, the client's key).

Nothing here knows an endpoint; :mod:`wga.serve.api` routes, this module reads and answers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wga.errors import InvalidInput, NotFound, WgaError, closest_names
from wga.serve.jobs import DEFAULT_CLIENT

TOKEN_ENV = "WGA_TOKEN"  # how the launcher hands the token to the gateway (never argv, never logs)

MAX_BODY_BYTES = 1024 * 1024  # a documented cap: 1,024 render requests fit in ~150 KB
MAX_JSON_DEPTH = 32  # nesting of a request body; ours are 3 deep
MAX_INT_DIGITS = 20  # digits of any integer in a body (Python refuses ≥ 4,300 anyway)
PEER_HEADER = "X-Wga-Peer"  # set by the gateway to the client's address (never trusted else)
CLIENT_HEADER = "X-Wga-Client"  # a page's own id (one per tab), for fairness between tabs
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LONG_INT = re.compile(rf"-?\d{{{MAX_INT_DIGITS + 1},}}")
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,199}$")


@dataclass
class Response:
    """What an endpoint answers: the notebook prints :meth:`body_json` and :meth:`info`."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def body_json(self) -> str:
        return json.dumps(self.body, default=str)

    def info(self) -> str:
        """The ResponseInfo cell's output: ``{"status": N, "headers": {...}}``."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
            **self.headers,
        }
        return json.dumps({"status": self.status, "headers": headers})


def error_response(error: WgaError) -> Response:
    """``{"error": message}`` with the error's status; Retry-After for 429 and 503."""
    headers: dict[str, str] = {}
    body: dict[str, Any] = {"error": str(error)}
    retry_after = getattr(error, "retry_after", None)
    if error.http_status in (429, 503):
        seconds = max(1, round(retry_after or 5))
        headers["Retry-After"] = str(seconds)
        body["retry_after"] = seconds
    return Response(error.http_status, body, headers)


def parse_request(request: str | dict | None) -> dict[str, Any]:
    """The gateway's ``REQUEST`` (a JSON string) as a dict with body, args, path, headers."""
    if request is None:
        return {"body": {}, "args": {}, "path": {}, "headers": {}}
    if isinstance(request, str):
        request = json.loads(request)
    return {
        "body": request.get("body", ""),
        "args": request.get("args") or {},
        "path": request.get("path") or {},
        "headers": request.get("headers") or {},
    }


def check_json_text(text: str) -> None:
    """Refuse bodies that would cost the parser dearly: too deep, or absurdly long integers."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise InvalidInput(
                    f"the request body is nested more than {MAX_JSON_DEPTH} levels deep; "
                    "send a flat JSON object as documented"
                )
        elif char in "]}":
            depth -= 1
    if _LONG_INT.search(text):
        raise InvalidInput(
            f"the request body has an integer of more than {MAX_INT_DIGITS} digits; "
            "no field takes such a number"
        )


def parse_json_text(text: str) -> Any:
    """JSON text → value, or a 400 that says what is wrong (never Python's own error text)."""
    check_json_text(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"the request body is not valid JSON ({error.msg} at line {error.lineno} "
            f"column {error.colno}); send a JSON object with Content-Type: application/json"
        ) from None
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"the request body cannot be read as JSON ({error})") from None


def json_body(request: dict[str, Any]) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says how to send one."""
    body = request.get("body")
    if isinstance(body, str):
        if not body.strip():
            raise InvalidInput(
                'the request has no body: send a JSON object, e.g. {"model": "vgg16-hed", '
                '"layer": "block4_conv1", "unit": 7, "size": 224}'
            )
        if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
            raise InvalidInput(f"the request body is larger than {MAX_BODY_BYTES} bytes")
        body = parse_json_text(body)
    if not isinstance(body, dict):
        raise InvalidInput(
            f"the request body must be a JSON object, not {type(body).__name__}: "
            'e.g. {"model": "vgg16-hed", "layer": "block4_conv1", "unit": 7, "size": 224}'
        )
    return body


def integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> Any:
    """``body[name]`` as an integer in ``[low, high]`` (``default`` when absent)."""
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "…"
        raise InvalidInput(
            f"{name} must be an integer from {low} to {high}, got {shown} ({type(value).__name__})"
        )
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be from {low} to {high}, got {value}")
    return value


def string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    """``body[name]`` as a non-empty string (``default`` when absent)."""
    value = body.get(name, default)
    if value is None:
        raise InvalidInput(f"missing field {name!r}: it is required")
    if not isinstance(value, str) or not value:
        shown = json.dumps(value)[:80]
        raise InvalidInput(
            f"{name} must be a non-empty string, got {shown} ({type(value).__name__})"
        )
    return value


def reject_unknown(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(key)[:40] for key in set(body) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(map(repr, unknown[:10]))}: "
            f"the allowed fields are {', '.join(allowed)}"
        )


def query(request: dict[str, Any], name: str) -> str | None:
    """One query argument (``?name=value``; the gateway gives each as a list), or ``None``."""
    values = request.get("args", {}).get(name)
    if values is None:
        return None
    value = values[-1] if isinstance(values, list) and values else values
    if not isinstance(value, str):
        raise InvalidInput(f"query argument {name} must be text")
    return value or None


def query_int(request: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    text = query(request, name)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,9}", text):
        raise InvalidInput(f"{name} must be an integer from {low} to {high}, got {text[:40]!r}")
    return integer({name: int(text)}, name, default, low, high)


def client_key(request: dict[str, Any]) -> str:
    """Who is asking, for fairness and the per-client cap: the peer address the gateway saw,
    plus the page's own id when it sends a well-formed one (tabs behind one address differ)."""
    headers = {str(k).lower(): v for k, v in request.get("headers", {}).items()}
    peer = headers.get(PEER_HEADER.lower())
    own = headers.get(CLIENT_HEADER.lower())
    if not isinstance(peer, str) or not peer:
        peer = DEFAULT_CLIENT
    if isinstance(own, str) and _CLIENT_ID.match(own):
        return f"{peer[:64]}/{own}"
    return peer[:64]


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Errors raised inside name the batch item they are about."""
    try:
        yield
    except WgaError as error:
        if prefix:
            error.args = (f"{prefix}: {error}", *error.args[1:])
        raise


def folder_names(root: Path, marker: str) -> list[str]:
    """The subfolders of ``root`` that hold a ``marker`` file (a probe's description, an atlas's
    json), by name, sorted; only plain names (a request never names a path)."""
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if _FOLDER_NAME.match(entry.name) and (entry / marker).is_file()
    )


def named_folder(root: Path, marker: str, name: Any, what: str, make: str) -> Path:
    """``root/name`` when it is one of :func:`folder_names`, else :class:`NotFound` naming the
    closest names, or ``make`` (how to make one) when there are none; ``what``: "probe"…"""
    names = folder_names(root, marker)
    if not isinstance(name, str) or name not in names:
        hint = closest_names(str(name), names) if names else f"there are none yet: {make}"
        raise NotFound(f"no {what} {str(name)[:80]!r}: {hint} (GET /api/{what}s)")
    return root / name
