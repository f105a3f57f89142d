"""The ``modelzoos`` command line: one module per command, each with ``add_parser(subparsers)`` and ``run(args)``.

Commands: ``zoos`` (the catalogue), ``generate`` (train a zoo into a directory), ``twins`` (sparsify a trained
zoo), ``build`` (zoo directories → a Hugging Face dataset repository folder), ``push`` (publish that folder on
the Hub), ``bench`` (weight-space baselines on a published config), ``verify`` (check a zoo directory or a
repository folder against its manifest).

The command modules parse and print; the work is done by the library, which they import only when they run
(``modelzoos --help`` does not import torch). Every ordinary error (bad input, missing or damaged files, a
folder in use, an unreachable Hub or cluster) is one ``error:`` line on stderr and exit code 2; Ctrl-C is one
``error: interrupted …`` line saying how to resume, exit code 130. Warnings of the library (``logging``, e.g.
a damaged file being repaired) are ``warning:`` lines on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

COMMANDS = ("zoos", "generate", "twins", "importing", "build", "push", "bench", "compare", "verify")
DESCRIPTION = """The Model Zoos dataset (Schürholt et al., NeurIPS 2022) as software: list the zoo catalogue, generate
zoos, sparsify them into twins, build them into a Hugging Face dataset repository, push it, and benchmark
weight-space baselines on it. `modelzoos COMMAND --help` describes each command."""
# Ordinary errors: an `error:` line, not a traceback. Matched by name along the exception's class hierarchy, so
# that reporting an error never imports a module (and torch) that the command did not need.
USER_ERRORS = frozenset({
    "builtins.ValueError", "builtins.FileNotFoundError", "builtins.NotADirectoryError",
    "modelzoos.data.DataCacheError", "modelzoos.distributed.DistributedError", "modelzoos.export.ZooFileError",
    "modelzoos.hub.HubError", "modelzoos.files.FolderInUseError",
})
INTERRUPTED_EXIT = 130  # exit code after Ctrl-C (128 + SIGINT), as shells report it


def human_size(nbytes: float) -> str:
    """Bytes as B / kB / MB / GB (powers of 1,000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def parse_epochs(text: str | None) -> tuple[int, ...] | None:
    """``"0,25,50"`` / ``"1-15"`` / ``"0,5-7"`` → sorted epochs; None or ``""`` → None (every stored epoch).
    ValueError naming the bad part (not a number, a reversed range, a negative epoch)."""
    if not text:
        return None
    epochs: set[int] = set()
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        try:
            first, last = int(a), int(b or a)
        except ValueError as err:
            raise ValueError(f"epochs {text!r}: {part!r} is neither an epoch nor a range a-b "
                             "(e.g. 0,25,50 or 0-50)") from err
        if first < 0 or last < first:
            raise ValueError(f"epochs {text!r}: {part!r} is not a range of epochs ≥ 0")
        epochs.update(range(first, last + 1))
    return tuple(sorted(epochs))


def add_threads(parser: argparse.ArgumentParser) -> None:
    """The ``--threads`` option of the commands that train (read by ``set_threads``)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op CPU threads (default: torch's; 1 is fastest for CNN zoos on a busy CPU)")


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch intra-op CPU threads (None: torch's default); ValueError below 1."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _version() -> str:
    try:
        return version("modelzoos")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelzoos", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"modelzoos {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"modelzoos.cli.{name}")
        module.add_parser(sub).set_defaults(run=module.run, interrupted=getattr(module, "INTERRUPTED", "interrupted"))
    return p


def is_user_error(err: BaseException) -> bool:
    """True for the ordinary errors of a command (``USER_ERRORS``)."""
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERRORS for c in type(err).__mro__)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger("modelzoos").addHandler(handler)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"error: {args.interrupted}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as err:  # only the ordinary errors; everything else keeps its traceback
        if not is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger("modelzoos").removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
