"""``python -m sandbox.cli``: the same as ``python -m sandbox`` and the ``sandbox`` command."""

import sys

from sandbox.cli import main

sys.exit(main())
