"""Lists sent to PostgreSQL as array literals (``stores/postgres_arrays.py``): every
value comes back from the server exactly as it was sent, through the cast each of
otpguard's statements puts on a list parameter."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .backends import PG_ADMIN_URL, BackendUnavailable
from .needs import unavailable

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")

from otpguard.stores.postgres_arrays import ArrayLiteralDumper, array_literal  # noqa: E402


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    try:
        c = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(str(BackendUnavailable(f"PostgreSQL is unreachable: {exc}")))
    c.adapters.register_dumper(list, ArrayLiteralDumper)
    with c:
        yield c


def roundtrip(conn: Any, values: list[Any], cast: str) -> Any:
    return conn.execute(f"SELECT %s::{cast}", (values,)).fetchone()[0]


def test_text_that_needs_quoting_comes_back_as_sent(conn: Any) -> None:
    values = ['a"b', "c\\d", "{x,y}", " lead", "", "NULL", "null", "é+44 7400", None, "a,b"]
    assert roundtrip(conn, values, "text[]") == values


def test_numbers_and_booleans_keep_their_values(conn: Any) -> None:
    assert roundtrip(conn, [0, -1, 2**62, None], "int8[]") == [0, -1, 2**62, None]
    floats = [0.1, -0.0, 1e16, 5e-324, 1.7976931348623157e308, 1800000000.123456]
    assert roundtrip(conn, floats, "float8[]") == floats
    back = roundtrip(conn, [math.inf, -math.inf, math.nan], "float8[]")
    assert back[:2] == [math.inf, -math.inf] and math.isnan(back[2])
    assert roundtrip(conn, [True, False, None], "bool[]") == [True, False, None]


def test_an_empty_list_is_an_empty_array(conn: Any) -> None:
    assert roundtrip(conn, [], "text[]") == []
    assert array_literal([]) == "{}"


def test_an_unsupported_element_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="not bytes"):
        array_literal(["a", b"b"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
        )
    )
)
def test_any_text_list_comes_back_as_sent(conn: Any, values: list[str | None]) -> None:
    assert roundtrip(conn, values, "text[]") == values


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False)), st.lists(st.integers(-(2**63), 2**63 - 1)))
def test_any_number_list_comes_back_as_sent(
    conn: Any, floats: list[float], ints: list[int]
) -> None:
    assert roundtrip(conn, floats, "float8[]") == floats
    assert roundtrip(conn, ints, "int8[]") == ints
