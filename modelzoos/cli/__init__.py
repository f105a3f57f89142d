"""The ``modelzoos`` command line: one module per command, each with ``add_parser(subparsers)`` and ``run(args)``.

Commands: ``zoos`` (the catalogue), ``generate`` (train a zoo into a directory), ``twins`` (sparsify a trained
zoo), ``build`` (zoo directories → a Hugging Face dataset repository folder), ``push`` (publish that folder on
the Hub), ``bench`` (weight-space baselines on a published config).

The command modules parse and print; the work is done by the library, which they import only when they run.
Every ordinary error (bad input, missing or damaged files, an unreachable Hub or cluster) is one ``error:``
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("zoos", "generate", "twins", "importing", "build", "push", "bench", "compare")
DESCRIPTION = """The Model Zoos dataset (Schürholt et al., NeurIPS 2022) as software: list the zoo catalogue, generate
zoos, sparsify them into twins, build them into a Hugging Face dataset repository, push it, and benchmark
weight-space baselines on it. `modelzoos COMMAND --help` describes each command."""


def human_size(nbytes: float) -> str:
    """Bytes as B / kB / MB / GB (powers of 1,000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelzoos", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"modelzoos.cli.{name}")
        module.add_parser(sub).set_defaults(run=module.run)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are ordinary errors of a command (an `error:` line, not a traceback)."""
    from modelzoos.data import DataCacheError
    from modelzoos.distributed import DistributedError
    from modelzoos.export import ZooFileError
    from modelzoos.hub import HubError

    return ValueError, FileNotFoundError, DataCacheError, ZooFileError, DistributedError, HubError


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as err:  # only the ordinary errors below; everything else keeps its traceback
        if not isinstance(err, _user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
