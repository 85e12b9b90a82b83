"""InfluxDB line protocol escaping, shared by every writer (the stream worker, the market's charts).

Follows InfluxDB 1.x's parser: in tag keys, tag values and field keys, commas, equals signs and spaces
are escaped with a backslash (the parser unescapes exactly those three); a value it cannot carry (empty,
a line break, a trailing backslash that would escape the next separator) raises ValueError naming the
field. String field values escape ``"`` and ``\\``.
"""

from __future__ import annotations

import math

_ESCAPE_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


def escape_tag(value: str, field: str) -> str:
    """A tag key or value (or a field key) escaped for line protocol; ValueError naming ``field`` if impossible."""
    if not value:
        raise ValueError(f"{field}: an empty value cannot be written as an InfluxDB tag")
    if "\n" in value or "\r" in value:
        raise ValueError(f"{field}: {value!r} contains a line break, which line protocol cannot carry")
    if value.endswith("\\"):
        raise ValueError(f"{field}: {value!r} ends with a backslash, which would escape the next separator")
    return value.translate(_ESCAPE_TAG)


def string_field(value: str) -> str:
    """A string field value, quoted and escaped."""
    return '"' + value.translate(_ESCAPE_STRING) + '"'


def float_field(value: float, field: str) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field}: {value!r} is not a finite number; InfluxDB cannot store it")
    return repr(number)
