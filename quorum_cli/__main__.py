"""``python -m quorum_cli``: the ``quorum`` command."""

from quorum_cli.main import main

main()
