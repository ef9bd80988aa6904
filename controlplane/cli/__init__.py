"""The roof: `controlplane run|status|cancel` and `python -m controlplane`. Nothing imports this package.

Exit codes: 0 success, 1 mission failed or budget exceeded (or nothing found), 2 bad spec/usage/setup,
3 mission cancelled.
"""

from controlplane.cli._codes import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from controlplane.cli.main import build_parser, main

__all__ = ["EXIT_CANCELLED", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
