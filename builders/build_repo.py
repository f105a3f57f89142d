"""Build a Hugging Face dataset repository folder from zoo directories: the same as `modelzoos build`.

    python builders/build_repo.py ZOO_DIR [ZOO_DIR ...] --repo DIR [--quiet]

One config per zoo directory (named after the zoo); configs already in DIR are kept, a config built again
is replaced, README.md is regenerated from all of them. The folder layout is docs/hub_format.md; push it
with `modelzoos push DIR --repo-id ORG/NAME`.
"""

import sys

from modelzoos.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
