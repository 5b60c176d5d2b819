"""Benchmark evaluation: PCK of a Matcher on SPair-71k, PF-Pascal and PF-Willow (docs/design.md §9)."""

from .report import format_table, write_json
from .runner import EvalResult, evaluate

__all__ = ["evaluate", "EvalResult", "format_table", "write_json"]
