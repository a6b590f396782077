"""``python -m kilowatt`` is the ``kilowatt`` command."""

from kilowatt.cli import main

raise SystemExit(main())
