"""The ``quorum`` command: one module per command group (:mod:`~quorum_cli.jobs`,
:mod:`~quorum_cli.fleet`, :mod:`~quorum_cli.local`, :mod:`~quorum_cli.bench`), assembled in
:mod:`~quorum_cli.main`."""
