"""``python -m course_lib.autograde``: release, validate or grade without the full CLI."""

import sys

from course_lib.autograde.cli import main

sys.exit(main())
