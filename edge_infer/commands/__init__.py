"""The command line's arguments, one module per group of commands; ``cli.py`` runs them.

``parser.py`` puts them together into one ``--help``; ``daemon_args`` (run, check-config, status),
``tool_args`` (info, classify, bench), ``model_args`` (export, train) and ``store_args``
(models) each declare their commands' arguments and help. Nothing here imports more than
argparse and the package's own light modules: ``edge-infer --help`` must stay instant.
"""
