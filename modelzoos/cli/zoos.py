"""``modelzoos zoos [PATTERN] [--json]``: the zoo catalogue as a table."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    z = sub.add_parser("zoos", help="list the zoo catalogue")
    z.add_argument("pattern", nargs="?", default="*", help="wildcard filter on zoo names, e.g. 'mnist_*'")
    z.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return z


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from modelzoos import catalogue

    zoos = catalogue.list_zoos(args.pattern)
    if args.json:
        print(json.dumps([z.summary() for z in zoos], indent=2))
        return 0
    head = ["name", "dataset", "architecture", "config", "models", "epochs", "states", "twin states", "parameters",
            "input"]
    rows = [head] + [
        [z.name, z.dataset, z.architecture, z.config, f"{z.num_models:,}", str(z.epochs), f"{z.states:,}",
         f"{z.twin_states:,}", f"{z.parameters:,}", "×".join(map(str, (z.in_channels, z.data.size, z.data.size)))]
        for z in zoos
    ]
    print(_table(rows, right={4, 5, 6, 7, 8}))
    published = [z for z in zoos if z.dataset != "digits"]
    if published:
        t = catalogue.totals(published)
        print(f"\npublished zoos listed: {t['zoos']}, models {t['models']:,}, states {t['states']:,} "
              f"(ResNet-18 epoch 0 stored but not counted), with 25-epoch sparsified twins {t['states_with_twins']:,}")
    return 0
