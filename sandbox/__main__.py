"""``python -m sandbox``: the command line, also as torchrun starts it (``torchrun ... -m sandbox run RECIPE``)."""

import sys

from sandbox.cli import main

sys.exit(main())
