"""``python -m sd4match_sdk.evaluation`` is ``sd4match-eval`` (so that ``torchrun -m sd4match_sdk.evaluation`` works)."""

from .cli import run

run()
