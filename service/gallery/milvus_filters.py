"""`TrackletFilter` as a Milvus boolean expression, with the reference semantics of `TrackletFilter.matches`.

Values are written into the expression as string and number literals, never as expression text:
pymilvus' expression templates (``filter_params``) would keep them out of the text altogether, but
Milvus Lite does not parse templates, so literals are escaped here. A string literal is JSON's
(``json.dumps(..., ensure_ascii=False)``): inside double quotes only ``\\"`` and ``\\\\`` are escaped, which
both Milvus and Milvus Lite read as the characters themselves, so a camera id like ``x" or id != "`` is
one string and can never end the literal. Values holding control characters are refused (labels never
hold them: the API refuses them, and Milvus Lite reads no ``\\u`` escapes); tab, line feed and carriage
return are written as ``\\t``, ``\\n``, ``\\r``.

Nulls: Milvus compares a null field as neither true nor false (``not (camera_id in [...])`` is false for
a null camera), so every clause names its null case explicitly.

Metadata: Milvus' JSON comparisons do not follow JSON typing everywhere (Milvus Lite finds ``true`` equal
to ``1``), so the backend stores beside the metadata a ``meta_tags`` JSON object with every scalar value
as a typed string (`metadata_tag`): ``b:true``, ``n:1`` (1 and 1.0 alike, as in JSON), ``s:text``,
``null``; objects and arrays get no tag, so no filter matches them. A metadata filter is string
equality on those tags, which every Milvus evaluates the same way.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from service.errors import InvalidRequestError
from service.gallery.base import TrackletFilter, is_empty_filter

#: Control characters other than tab, line feed and carriage return (which JSON escapes as \t \n \r).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def string_literal(value: str) -> str:
    """``value`` as a Milvus string literal; InvalidRequestError if it holds control characters."""
    if _CONTROL.search(value):
        raise InvalidRequestError("Filter values cannot hold control characters.")
    return json.dumps(value, ensure_ascii=False)


def number_literal(value: float) -> str:
    if not math.isfinite(value):
        raise InvalidRequestError("Filter times must be finite numbers.")
    return repr(float(value))


def metadata_tag(value: Any) -> str | None:
    """The typed tag of one metadata value (None for objects and arrays, which no filter matches).

    Numbers: an integral value is written as the integer (so 1 and 1.0 share ``n:1``), others by repr;
    Python compares int and float exactly, and so do these strings.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, int):
        return f"n:{value}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return f"n:{int(value)}" if value.is_integer() else f"n:{value!r}"
    if isinstance(value, str):
        return f"s:{value}"
    return None


def metadata_tags(metadata: dict[str, Any]) -> dict[str, str]:
    """The ``meta_tags`` object stored beside a record's metadata."""
    tags = {}
    for key, value in metadata.items():
        tag = metadata_tag(value)
        if tag is not None:
            tags[key] = tag
    return tags


def _in_list(field: str, values: list[str]) -> str:
    return f"{field} in [{', '.join(string_literal(value) for value in values)}]"


def filter_expression(tracklet_filter: TrackletFilter | None) -> str | None:
    """The Milvus boolean expression keeping exactly the records ``tracklet_filter.matches``: "" when the
    filter keeps every record, None when it can keep none (``cameras=[]``).

    Times use the stored ``span_start``/``span_end``: a record's start and end, each standing in for the
    other when only one is given, and both null when neither is (such records fail any time window).
    """
    if is_empty_filter(tracklet_filter):
        return ""
    clauses = []
    if tracklet_filter.cameras is not None:
        if not tracklet_filter.cameras:
            return None
        clauses.append(f"(camera_id is not null and {_in_list('camera_id', tracklet_filter.cameras)})")
    if tracklet_filter.exclude_cameras:
        clauses.append(f"(camera_id is null or not ({_in_list('camera_id', tracklet_filter.exclude_cameras)}))")
    if tracklet_filter.person_id is not None:
        clauses.append(f"(person_id is not null and person_id == {string_literal(tracklet_filter.person_id)})")
    if tracklet_filter.after is not None:
        clauses.append(f"(span_end is not null and span_end >= {number_literal(tracklet_filter.after)})")
    if tracklet_filter.before is not None:
        clauses.append(f"(span_start is not null and span_start <= {number_literal(tracklet_filter.before)})")
    for key, expected in (tracklet_filter.metadata or {}).items():
        tag = metadata_tag(expected)
        # Keys are checked by TrackletFilter (no quotes, backslashes or control characters).
        clauses.append(f"meta_tags[{string_literal(key)}] == {string_literal(tag)}")
    return " and ".join(clauses)
