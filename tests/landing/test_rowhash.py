"""The version hash: equal rows hash equal, and any difference — a value, a null, a value moved between
columns, a timestamp's zone — changes it. Reruns are idempotent only because of the first property."""

from datetime import UTC, date, datetime

import polars as pl

from ndc.landing.rowhash import row_hashes


def test_equal_rows_hash_equal_and_different_rows_differ():
    frame = pl.DataFrame({
        "a": ["x", "x", None, "", "x|", "x"],
        "b": ["y", "y", "y", "y", "y", "|y"],
        "d": [date(2020, 1, 1), date(2020, 1, 1), date(2020, 1, 1), date(2020, 1, 1), date(2020, 1, 1),
              date(2020, 1, 1)],
    })
    hashes = row_hashes(frame, ["a", "b", "d"]).to_list()
    assert hashes[0] == hashes[1]
    assert len(set(hashes[1:])) == 5, "null, empty, and a separator moved between columns must all differ"


def test_the_same_instant_in_another_zone_hashes_the_same():
    utc = pl.DataFrame({"t": [datetime(2025, 7, 1, 3, 0, tzinfo=UTC)]})
    local = utc.with_columns(pl.col("t").dt.convert_time_zone("Asia/Ho_Chi_Minh"))
    later = pl.DataFrame({"t": [datetime(2025, 7, 1, 3, 0, 0, 1, tzinfo=UTC)]})
    assert row_hashes(utc, ["t"]).to_list() == row_hashes(local, ["t"]).to_list()
    assert row_hashes(utc, ["t"]).to_list() != row_hashes(later, ["t"]).to_list()


def test_the_columnar_md5_equals_hashlib_over_the_canonical_text():
    """Versions hashed before the columnar md5 keep their hashes: the digest is hashlib's md5 of the same text."""
    import hashlib

    frame = pl.DataFrame({"a": ["Nguyễn Văn An", None, "", "x|y"], "d": [date(2020, 1, 1), None, date(1969, 12, 31),
                                                                       date(2000, 2, 29)]})
    expected = []
    for a, d in frame.iter_rows():
        parts = []
        for value in (a, None if d is None else str((d - date(1970, 1, 1)).days)):
            text = "\x00" if value is None else value
            parts.append(f"{len(text.encode())}:{text}")
        expected.append(hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest())
    assert row_hashes(frame, ["a", "d"]).to_list() == expected
