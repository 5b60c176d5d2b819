"""``python -m sd4match_sdk.evaluation`` is ``sd4match-eval`` (so that ``torchrun -m sd4match_sdk.evaluation`` works)."""

import sys

from .cli import main

sys.exit(main())
