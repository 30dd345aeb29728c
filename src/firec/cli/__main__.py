"""``python -m firec.cli``: the ``firec`` command."""

import sys

from firec.cli import main

sys.exit(main())
