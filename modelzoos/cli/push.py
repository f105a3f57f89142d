"""``modelzoos push REPO_DIR --repo-id ORG/NAME [--config CFG] [--private]``: publish a repository folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelzoos.cli import human_size

INTERRUPTED = "interrupted; rerun the same command to resume (files already on the Hub are skipped)"


def add_parser(sub) -> argparse.ArgumentParser:
    u = sub.add_parser("push", help="publish a repository folder on the Hugging Face Hub (token from HF_TOKEN)")
    u.add_argument("repo_dir", help="folder built by `modelzoos build`")
    u.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repository on the Hub")
    u.add_argument("--config", default=None, help="push only this config (others on the Hub stay untouched)")
    u.add_argument("--private", action="store_true", help="create the repository as private")
    u.add_argument("--revision", default="main", help="branch to push to (created from main if missing)")
    u.add_argument("--timeout", type=float, default=None,
                   help="seconds a request may go without an answer before it is retried (default: 120)")
    u.add_argument("--retries", type=int, default=None,
                   help="retries of a request that timed out, failed to connect or got HTTP 408/429/5xx "
                        "(exponential backoff; default: 4)")
    return u


def run(args: argparse.Namespace) -> int:
    from modelzoos.hub import RETRIES, TIMEOUT_S, push
    from modelzoos.repository import DATA_DIR, README

    result = push(Path(args.repo_dir), args.repo_id, config=args.config, private=args.private,
                  revision=args.revision, timeout=TIMEOUT_S if args.timeout is None else args.timeout,
                  retries=RETRIES if args.retries is None else args.retries)
    root = Path(args.repo_dir)
    print(f"pushed {len(result.configs)} config(s) to {result.repo_id} in {result.commits} commit(s): "
          f"{result.commit_url}")
    for name in result.configs:
        mine = [p for p in result.uploaded if p.startswith(f"{DATA_DIR}/{name}/")]
        same = [p for p in result.unchanged if p.startswith(f"{DATA_DIR}/{name}/")]
        gone = [p for p in result.deleted if p.startswith(f"{DATA_DIR}/{name}/")]
        size = sum((root / p).stat().st_size for p in mine)
        print(f"  {name}: {len(mine)} file(s) uploaded ({human_size(size)}), {len(same)} unchanged, "
              f"{len(gone)} stale deleted")
    print(f"  {README}: {'updated' if result.card_updated else 'unchanged'}; the card lists "
          f"{len(result.card_configs)} config(s), default {result.default}")
    if result.skipped:
        shown = ", ".join(result.skipped[:10]) + (f" and {len(result.skipped) - 10} more" if len(result.skipped) > 10
                                                   else "")
        print(f"  skipped {len(result.skipped)} file(s) that `modelzoos build` did not write: {shown}")
    print("load with:")
    print("  from datasets import load_dataset")
    for name in result.configs:
        print(f'  load_dataset("{result.repo_id}", "{name}")')
    return 0
