"""Build a Hugging Face dataset repository folder from zoo directories (same as `modelzoos build`).

    python builders/build_repo.py ZOO_DIR [ZOO_DIR ...] --repo DIR [--quiet]

One config per zoo directory (named after the zoo); configs already in DIR are kept, a config built again
is replaced, README.md is regenerated from all of them. The folder layout is docs/hub_format.md; push it
with `modelzoos push DIR --repo-id ORG/NAME`.
"""

import argparse
import sys

from modelzoos.export import ZooFileError
from modelzoos.publish import cli_build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("zoo_dirs", nargs="+", metavar="ZOO_DIR", help="zoo directories written by `modelzoos generate`")
    p.add_argument("--repo", required=True, help="repository folder to create or update")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        return cli_build(args)
    except (ValueError, ZooFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
