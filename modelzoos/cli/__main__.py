"""``python -m modelzoos.cli``: the same as the ``modelzoos`` command."""

import sys

from modelzoos.cli import main

sys.exit(main())
