"""``python -m streams.cli``: the ``eddy`` command."""

from streams.cli.main import main

main()
