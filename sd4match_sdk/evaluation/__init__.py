"""Benchmark evaluation: PCK of a Matcher on SPair-71k, PF-Pascal and PF-Willow (docs/design.md §9)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .report import format_table, write_json
    from .runner import EvalResult, evaluate

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "format_table": ".report",
        "write_json": ".report",
        "EvalResult": ".runner",
        "evaluate": ".runner",
    },
)

__all__ = ["evaluate", "EvalResult", "format_table", "write_json"]
