"""``python -m infra.cli``: the same entry point as the ``tierflow`` script."""

from __future__ import annotations

import sys

from infra.cli.app import main

sys.exit(main())
