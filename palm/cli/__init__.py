"""The ``palm`` command line: :mod:`palm.cli.main` builds the parser; one module per command."""
