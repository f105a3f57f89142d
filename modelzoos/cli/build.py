"""``modelzoos build ZOO_DIR... --repo DIR``: zoo directories → a Hugging Face dataset repository folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelzoos.cli import human_size

INTERRUPTED = "interrupted; rerun the same command (configs already built are kept, the others are rebuilt)"


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("build", help="turn zoo directories into a Hugging Face dataset repository folder")
    b.add_argument("zoo_dirs", nargs="+", metavar="ZOO_DIR", help="zoo directories written by `modelzoos generate`")
    b.add_argument("--repo", required=True, help="repository folder to create or extend (one config per zoo)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    return b


def run(args: argparse.Namespace) -> int:
    from modelzoos.publish import build_repo
    from modelzoos.repository import SPLITS, read_configs, validate_repo

    repo = Path(args.repo).resolve()
    built = build_repo([Path(d) for d in args.zoo_dirs], repo, progress=not args.quiet)
    validate_repo(repo)
    configs = read_configs(repo)
    size = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file() and not any(
        part.startswith(".") for part in f.relative_to(repo).parts))
    width = max(map(len, configs))
    print(f"built {', '.join(built)}; {repo} holds {len(configs)} config(s), {human_size(size)}:")
    for name, cfg in configs.items():
        rows = "  ".join(f"{s} {cfg.num_rows[s]:,} rows ({len(cfg.splits[s]):,} models)" for s in SPLITS)
        print(f"  {name.ljust(width)}  {rows}")
    print("load it with load_zoo, which caches a local folder by its files' contents (plain load_dataset(folder) "
          "caches by folder name and can serve the rows of an earlier build):")
    print("  from modelzoos.loading import load_zoo")
    print(f"  ds = load_zoo({json.dumps(str(repo))}, {json.dumps(built[0])}, split=\"train\")")
    return 0
