"""Messages between the sandboxed program and its checker: length-prefixed tagged JSON.

Only plain builtin values cross (None, bool, int, float, complex, str, bytes, list,
tuple, set, frozenset, dict), encoded by exact type, so the checker compares values it
built itself: an object with an always-True __eq__ cannot cross. JSON parsing is safe
on hostile bytes, unlike pickle or marshal. Standard library only (runs in sandboxes).
"""

import json
import os
import struct

MAX_MESSAGE = 64 * 1024 * 1024
_MAX_ITEMS = 1_000_000


class WireError(Exception):
    """A value cannot be sent, or a message is malformed."""


def encode(value):
    count = [0]

    def tag(item):
        count[0] += 1
        if count[0] > _MAX_ITEMS:
            raise WireError("value too large")
        kind = type(item)
        if item is None or kind in (bool, int, str):
            return item
        if kind is float:
            return {"f": repr(item)}  # keeps inf, nan and -0.0 exact
        if kind is complex:
            return {"c": [repr(item.real), repr(item.imag)]}
        if kind is bytes:
            return {"b": item.hex()}
        if kind is list:
            return [tag(x) for x in item]
        if kind in (tuple, set, frozenset):
            return {kind.__name__: [tag(x) for x in item]}
        if kind is dict:
            return {"d": [[tag(k), tag(v)] for k, v in item.items()]}
        raise WireError(f"{kind.__qualname__} is not a plain builtin value")

    return json.dumps(tag(value))


def decode(text):
    def untag(item):
        if isinstance(item, list):
            return [untag(x) for x in item]
        if not isinstance(item, dict):
            return item
        (key, body), = item.items()
        if key == "f":
            return float(body)
        if key == "c":
            return complex(float(body[0]), float(body[1]))
        if key == "b":
            return bytes.fromhex(body)
        if key == "tuple":
            return tuple(untag(x) for x in body)
        if key == "set":
            return {untag(x) for x in body}
        if key == "frozenset":
            return frozenset(untag(x) for x in body)
        if key == "d":
            return {untag(k): untag(v) for k, v in body}
        raise WireError(f"unknown tag {key!r}")

    try:
        return untag(json.loads(text))
    except WireError:
        raise
    except Exception as error:  # any malformed message is one error to the checker
        raise WireError(f"malformed message: {type(error).__name__}") from None


def send(fd, text, write=os.write):
    data = text.encode("utf-8")
    payload = struct.pack(">I", len(data)) + data
    while payload:
        payload = payload[write(fd, payload):]


def receive(fd, read=os.read):
    """The next message's text, or None at end of stream."""
    header = _read_exactly(fd, 4, read)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size > MAX_MESSAGE:
        raise WireError("message too large")
    body = _read_exactly(fd, size, read)
    if body is None:
        raise WireError("truncated message")
    return body.decode("utf-8")


def _read_exactly(fd, size, read):
    chunks, remaining = [], size
    while remaining:
        chunk = read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
