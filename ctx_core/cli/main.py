"""``ctx``: one subcommand per pipeline stage, registered from the stage table.

Every subcommand takes ``--params FILE`` (default ``params.yaml``) and
repeatable ``--set section.key=value``. A user error prints one line,
``ctx: error: ...``, and exits with status 2; no traceback.

``ctx <command> ...`` imports only the module of the stage that owns
``command`` (``ctx_core.stages``), so running a stage never imports another
stage's code; ``ctx --help`` imports every stage's CLI module to list them.
A stage's own command (``ctx pretrain``, not ``ctx pairs``) holds the stage's
lock (``ctx_core.stage_lock``) while it runs, the same lock the Dagster assets
take: a second writer of the same outputs is refused naming the pid that holds
them (``CTX_STAGE_LOCK_WAIT=SECONDS`` waits that long first).
Set ``CTX_IMPORT_LOG=<folder>`` to have the run write the ``ctx_core`` files
it imported to ``<folder>/<command>-<pid>.txt`` (``tests/test_two_doors.py``
checks them against ``dvc.yaml``'s deps).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from contextlib import nullcontext
from importlib import import_module
from pathlib import Path
from typing import Callable, ContextManager, Sequence

from ctx_core.cli.common import common_args
from ctx_core.errors import UserError
from ctx_core.stage_lock import stage_lock, wait_from_env
from ctx_core.stages import STAGES, stage_for_command

IMPORT_LOG = "CTX_IMPORT_LOG"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every stage's subcommands, or only those of the stage owning ``command``."""
    parser = argparse.ArgumentParser(prog="ctx", description="Context-prediction pretraining pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    owner = stage_for_command(command) if command else None
    for stage in [owner] if owner else STAGES:
        import_module(stage.cli).register(sub, common_args)
    return parser


def _log_imports(folder: str, command: str) -> None:
    """Write the ``ctx_core`` source files this process imported, one repo-relative path a line."""
    package = Path(__file__).resolve().parent.parent
    files = sorted({
        Path(m.__file__).resolve().relative_to(package.parent).as_posix()
        for name, m in list(sys.modules.items())
        if (name == "ctx_core" or name.startswith("ctx_core.")) and getattr(m, "__file__", None)
    })
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{command}-{os.getpid()}.txt").write_text("\n".join(files) + "\n")


def writer_lock(args: argparse.Namespace) -> ContextManager:
    """The stage lock when ``args.command`` writes a stage's outputs (once per ``torchrun`` group: rank 0)."""
    owner = stage_for_command(args.command)
    if owner is None or args.command.replace("-", "_") != owner.name or os.environ.get("RANK", "0") != "0":
        return nullcontext()
    name = owner.name
    # a foreach stage's item flag is the list's name in the singular (inits -> --init); without one, lock them all
    item = getattr(args, owner.foreach.rsplit(".", 1)[-1].removesuffix("s"), None) if owner.foreach else None
    if isinstance(item, str):
        name = owner.dvc_stage(item)
    root = Path(args.params).resolve().parent if args.params else Path.cwd()
    return stage_lock(root, name, wait_from_env(0.0),
                      on_wait=lambda message: print(f"ctx: {message}", file=sys.stderr, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(first).parse_args(argv)
    if os.environ.get(IMPORT_LOG):
        atexit.register(_log_imports, os.environ[IMPORT_LOG], args.command)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with writer_lock(args):
            return func(args)
    except UserError as exc:
        print(f"ctx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
