"""L9, the command line: ``afa COMMAND``.

:mod:`afa.cli.main` parses and calls one command of :mod:`afa.cli.commands` (one module
each); :mod:`afa.cli.arguments` declares what several commands share and
:mod:`afa.cli.checks` refuses bad values in one line naming the option. Nothing below this
layer imports it.
"""
