"""``ctx``: the command-line front door, one module per stage (the stage table's ``cli``).

Only the subcommand's own module is imported for a run (``main.py``), so a
stage's code, as ``dvc.yaml`` lists it, is the closure of that module's imports.
"""

from ctx_core.cli.main import main

__all__ = ["main"]
