"""The paper's numbers in code equal docs/design.md §12.2-12.3, and the right row is chosen (§12.6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sd4match_sdk.data import SPAIR_CATEGORIES
from sd4match_sdk.evaluation.paper import TABLE2, TABLE2_CATEGORIES, TABLE3, paper_values

DESIGN = (Path(__file__).parents[2] / "docs" / "design.md").read_text()


def _section(title: str) -> str:
    start = DESIGN.index(title)
    return DESIGN[start : DESIGN.index("\n### ", start + 1)]


def _cells(line: str) -> list[str]:
    return [c.strip().strip("*") for c in line.strip().strip("|").split("|")]


def test_table2_equals_the_design_doc() -> None:
    rows = {}
    for line in _section("### 12.2 Table 2").splitlines():
        cells = _cells(line)
        if cells[0] in ("Single", "Class", "CPM"):
            rows[cells[0].lower()] = tuple(float(c) for c in cells[1:])
    assert rows == TABLE2
    assert TABLE2_CATEGORIES == SPAIR_CATEGORIES  # the columns are the sorted SPair categories


def test_table3_equals_the_design_doc() -> None:
    rows = {}
    for line in _section("### 12.3 Table 3").splitlines():
        found = re.match(r"\| (Single|CPM), tuned on (PF-Pascal|SPair-71k) \|", line)
        if not found:
            continue
        kind, tuned = found.group(1).lower(), {"PF-Pascal": "pfpascal", "SPair-71k": "spair"}[found.group(2)]
        pascal, willow, spair = ([float(v) for v in cell.split("/")] for cell in _cells(line)[1:])
        rows[(kind, tuned)] = {"pfpascal": dict(zip((0.05, 0.1, 0.15), pascal)),
                               "pfwillow": dict(zip((0.05, 0.1, 0.15), willow)), "spair": dict(zip((0.05, 0.1), spair))}  # fmt: skip
    assert rows == TABLE3


def test_the_row_follows_the_prompt_and_the_benchmark() -> None:
    table2 = paper_values("class", "spair", "spair")
    assert table2.per_category["cat"] == 84.2 and table2.overall == {0.1: 75.5} and table2.category_alpha == 0.1
    single = paper_values("single", "spair", "spair")
    assert single.overall == {0.05: 56.5, 0.1: 72.6} and single.per_category["tvmonitor"] == 83.1
    assert "Table 2" in single.source and "Table 3" in single.source
    willow = paper_values("cpm", "pfpascal", "pfwillow")
    assert willow.overall == {0.05: 52.1, 0.1: 80.4, 0.15: 91.2} and not willow.per_category
    assert willow.label == "SD4Match-CPM tuned on PF-Pascal, evaluated on PF-Willow"


@pytest.mark.parametrize("kind, tuned, evaluated", [("class", "pfpascal", "pfpascal"), ("class", "spair", "pfwillow"),
                                                    ("text", "spair", "spair"), ("single", "pfwillow", "pfwillow")])  # fmt: skip
def test_no_row_where_the_paper_has_none(kind, tuned, evaluated) -> None:
    assert paper_values(kind, tuned, evaluated) is None
