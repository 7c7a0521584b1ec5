"""The gate's NFC repair normalises only values holding a character that NFC could change: that shortcut must
never leave a value un-normalised, and the generated table must match this Python's Unicode data."""

import random
import unicodedata

import polars as pl

from ndc import nfc
from ndc.contracts.validation import normalise_text
from ndc.nfc_table import may_change_ranges


def test_the_generated_table_is_current():
    assert unicodedata.unidata_version == nfc.UNICODE_VERSION
    assert list(nfc.RANGES) == may_change_ranges(), "regenerate plugins/ndc/contracts/nfc.py"


def test_the_repair_equals_nfc_on_random_text_mixing_composed_and_decomposed_forms():
    rng = random.Random(20)
    pool = [chr(c) for c in range(0x20, 0x3100) if unicodedata.category(chr(c))[0] not in "CZ"] + list(
        "Nguyễn Trần Lê Đặng Phường Hà Nội") + ["\u0301", "\u0323", "\u0302", "\u0309", "\u09be", "\u09c7",
                                               "\u1161", "\u11a8", "\u1100", "\U0001f600", "\u212b", "\u0340", "A"]
    values = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 8))) for _ in range(100_000)]
    values += [unicodedata.normalize("NFD", "Nguyễn Thị Ánh"), "Nguyễn Thị Ánh", None]
    frame = pl.DataFrame({"text": values, "other": ["ascii"] * len(values)})
    repaired, changed = normalise_text(frame)
    expected = [None if v is None else unicodedata.normalize("NFC", v) for v in values]
    assert repaired["text"].to_list() == expected
    assert changed == sum(v != e for v, e in zip(values, expected, strict=True)) > 0
    assert repaired["other"].to_list() == frame["other"].to_list()


def test_text_already_nfc_is_returned_as_it_is():
    frame = pl.DataFrame({"name": ["Nguyễn Văn An", "Đặng Thị Hương", None]})
    repaired, changed = normalise_text(frame)
    assert changed == 0 and repaired.equals(frame)
