"""``python -m sd4match_sdk.training`` is ``sd4match-train`` (so that ``torchrun -m sd4match_sdk.training`` works)."""

from .cli import run

run()
