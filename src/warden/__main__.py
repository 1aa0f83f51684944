"""``python -m warden`` is the ``warden`` command."""

from warden.cli import main

main()
