"""``modelzoos verify DIR``: check a zoo directory or a repository folder against its manifest, byte for byte."""

from __future__ import annotations

import argparse

from modelzoos.cli import human_size


def add_parser(sub) -> argparse.ArgumentParser:
    v = sub.add_parser("verify", help="check a zoo directory or repository folder against its manifest (SHA-256)")
    v.add_argument("folder", help="a zoo directory (`modelzoos generate`) or repository folder (`modelzoos build`)")
    return v


def run(args: argparse.Namespace) -> int:
    from modelzoos.manifest import verify

    result = verify(args.folder)
    print(f"ok: {result.path} ({result.kind}): {result.files:,} files, {human_size(result.bytes)}, every SHA-256 "
          f"as in its manifest{'; every Parquet page matches its checksum' if result.kind != 'zoo directory' else ''}")
    return 0
