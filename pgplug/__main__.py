"""``python -m pgplug``: the same as the ``pgplug`` command."""

from pgplug.cli import main

raise SystemExit(main())
