"""Exported CSV cells never start a formula in a spreadsheet."""

from __future__ import annotations

import csv
import io

import pytest

from callrec.spreadsheet import SafeDictWriter, SafeWriter, cell

ATTACKS = [
    '=HYPERLINK("http://evil.example/","click me")',
    "+SUM(1,2)",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("value", ATTACKS)
def test_formula_triggers_are_quoted(value: str) -> None:
    assert cell(value) == "'" + value


@pytest.mark.parametrize("value", ["+4930123456", "-3.5", "+1 (555) 010-9999", "3001", "Alice"])
def test_plain_values_unchanged(value: str) -> None:
    assert cell(value) == value


def test_non_text_unchanged() -> None:
    assert cell(-5) == -5
    assert cell(None) is None


def test_writers_round_trip_through_a_csv_reader() -> None:
    text = io.StringIO()
    SafeWriter(text).writerow([1, ATTACKS[0], "+4930123"])
    out = io.StringIO()
    writer = SafeDictWriter(out, ["id", "name"])
    writer.writeheader()
    writer.writerows([{"id": 2, "name": ATTACKS[3]}])
    assert next(csv.reader(io.StringIO(text.getvalue()))) == ["1", "'" + ATTACKS[0], "+4930123"]
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == [
        {"id": "2", "name": "'" + ATTACKS[3]}
    ]
