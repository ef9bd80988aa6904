"""`python -m controlplane ...`, e.g. under `ray job submit --working-dir . -- python -m controlplane run ...`."""

import sys

from controlplane.cli import main

sys.exit(main())
