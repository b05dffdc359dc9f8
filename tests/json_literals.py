"""Hypothesis strategies for JSON literals a producer might write in a field: valid, odd and broken forms of
symbols, numbers and times. The fast parsers' tests feed them to both paths, which must read them alike."""

from __future__ import annotations

import json
from datetime import datetime

from hypothesis import strategies as st

symbols = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,22}", fullmatch=True),
    st.sampled_from(["", "AAPL\n", " AAPL", "AAPL ", "ÄPL", "A\x00", "a" * 20, "a" * 21]),
    st.text(max_size=24),
)
number_literals = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,12})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
prices = st.one_of(
    number_literals,
    number_literals.map(json.dumps),  # the same, as JSON strings
    st.decimals(allow_nan=True, allow_infinity=True).map(lambda d: json.dumps(str(d))),
    st.sampled_from(['" 1.5 "', '"1_000"', '"+1.5"', '"-0"', '"0x10"', "true", "null", "[]", '"1e2"', '"1E-3"']),
    st.text(max_size=12).map(json.dumps),
)
datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.one_of(st.none(), st.timezones())
)
time_forms = st.one_of(
    datetimes.map(lambda d: d.isoformat()),
    datetimes.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    datetimes.map(lambda d: d.isoformat(sep=" ")),
    datetimes.map(lambda d: d.isoformat(timespec="milliseconds")),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:?[0-9]{2})?",
        fullmatch=True,
    ),
    st.text(max_size=30),
)
times = st.one_of(
    time_forms.map(json.dumps), st.integers(-(10**12), 10**12).map(str), st.sampled_from(["null", "1.5e9"])
)
