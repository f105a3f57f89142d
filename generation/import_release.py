"""Import every zoo found in a folder of downloaded release files, then build the dataset repository.

    python generation/import_release.py downloads/ --out zoos/ --repo hub/
    python generation/import_release.py downloads/ --out zoos/ --repo hub/ --epochs 0,25,50 --workers 8
    python generation/import_release.py downloads/ --out zoos/ --pattern 'mnist_*'      # import only

Every entry of DOWNLOADS (zips, tars, unpacked experiment folders; a zoo may be spread over several) is
indexed once to see which experiment folders it holds. Each published zoo of the catalogue whose
``source`` is among them is imported into ``<out>/<zoo>`` from every entry holding it
(``modelzoos.importing.import_zoo``, as ``modelzoos import``); the released variational-dropout twins
(``cnn_small_mnist_ard``, ``cnn_small_svhn_ard``) into ``<out>/<zoo>_sparse_vd`` after their source zoo
(``import_twins``); each summary is written next to its directory (``<zoo>.import.json``). Experiments
that match no catalogued zoo are listed and skipped. With ``--repo`` every
imported directory is built into the repository folder (``modelzoos.publish.build_repo``). Resumable: rerun
the same command after a crash; finished directories are left as they are. docs/import.md has the rules.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelzoos.catalogue import TWIN_EPOCHS, list_zoos, twin_name
from modelzoos.cli import parse_epochs
from modelzoos.importing import ImportSummary, import_twins, import_zoo
from modelzoos.publish import build_repo
from modelzoos.release import index, open_source
from modelzoos.twins import SOURCES


def experiments(downloads: Path) -> dict[str, list[Path]]:
    """{experiment folder: the entries of ``downloads`` holding trials of it}."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(downloads.iterdir()):
        if entry.name.startswith("."):
            continue
        source = open_source(entry)
        for experiment in index([source]).experiments():
            found.setdefault(experiment, []).append(entry)
        source.close()
    return found


def report(s: ImportSummary) -> None:
    """One line per imported zoo; the whole summary goes to ``<zoo dir>/../<zoo>.import.json``."""
    path = s.zoo_dir.path.parent / f"{s.zoo_dir.zoo.name}.import.json"
    path.write_text(json.dumps(s.to_json(), indent=2) + "\n")
    print(f"{s.zoo_dir.zoo.name}: {s.models:,} of {s.spec_models:,} models, {s.states:,} of {s.expected_states:,} "
          f"states ({len(s.missing_states):,} missing from imported models, {s.nonfinite_states:,} nonfinite), "
          f"{len(s.problems):,} problems; summary in {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("downloads", type=Path, help="folder of release files as downloaded (zips, tars, folders)")
    p.add_argument("--out", type=Path, required=True, help="folder of the imported zoo directories")
    p.add_argument("--repo", type=Path, default=None, help="repository folder to build from them")
    p.add_argument("--pattern", default="*", help="wildcard over zoo names, e.g. 'mnist_*'")
    p.add_argument("--epochs", default=None, help="epochs to keep, e.g. 0,25,50 (default: all)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--optimizer-state", action="store_true",
                   help="also keep the zoos' optimizer states (not the twins'; docs/import.md)")
    args = p.parse_args()
    epochs = parse_epochs(args.epochs)
    found = experiments(args.downloads)
    zoos = {z.source: z for z in list_zoos(args.pattern, published=True) if z.source}
    twins = {experiment: zoo for (zoo, method), experiment in SOURCES.items() if method == "vd"}
    skipped = sorted(set(found) - set(zoos) - set(twins))
    if skipped:
        print(f"experiments of no catalogued zoo (skipped): {', '.join(e or '(top level)' for e in skipped)}")
    built = []
    for experiment, zoo in zoos.items():
        if experiment not in found:
            continue
        s = import_zoo(found[experiment], zoo, args.out / zoo.name, epochs=epochs, workers=args.workers,
                       optimizer_state=args.optimizer_state)
        report(s)
        built.append(s.zoo_dir.path)
    for experiment, source_zoo in twins.items():
        source_dir = args.out / source_zoo
        if experiment not in found or source_dir not in built:
            continue
        kept = None if epochs is None else [e for e in epochs if e <= TWIN_EPOCHS] or None  # twins: 0..25
        s = import_twins(found[experiment], source_dir, args.out / twin_name(source_zoo, "vd"), epochs=kept,
                         workers=args.workers)
        report(s)
        built.append(s.zoo_dir.path)
    if args.repo is not None and built:
        print(f"built {', '.join(build_repo(built, args.repo))} into {args.repo}")


if __name__ == "__main__":
    main()
