"""The ``mmder`` command line: a small parser core (:mod:`~harness.cli.base`), one module per command
group, and :func:`harness.cli.main.main`."""
