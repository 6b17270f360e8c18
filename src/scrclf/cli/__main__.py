"""``python -m scrclf.cli``: the ``scrclf`` command."""

import sys

from scrclf.cli.app import main

sys.exit(main())
