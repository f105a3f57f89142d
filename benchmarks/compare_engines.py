"""Are the faster paths faithful in distribution? ``modelzoos compare`` on zoos made by two paths (BENCHMARKS.md).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/compare_engines.py                      # all comparisons, CPU
    OMP_NUM_THREADS=1 python benchmarks/compare_engines.py --only seed_engines   # one of them

Comparisons (``COMPARISONS``), each of two zoos of one spec that differ only in how they were trained:

- ``seed_engines``: digits seed zoo, first 100 models × 15 epochs, population engine (A) vs reference engine (B);
- ``hyp_engines``: digits Hyp-10-rand zoo, first 128 models (the first replicate of the uniform and normal
  inits: every activation, optimizer, learning rate, weight decay and dropout, 8–64 models per group) ×
  10 epochs, population (A) vs reference (B);
- ``seed_layout``: digits seed zoo, 100 models × 15 epochs, population engine in channels-last (A, the CPU
  default) vs PyTorch's layout (B, ``MODELZOOS_CHANNELS_LAST=0``).

Zoos are generated into ``--zoos`` (default ``out/compare``, git-ignored) unless already there: generation is
resumable and a finished zoo is reused, so the reference-engine runs (one model at a time, hours on a shared
CPU) can be started beforehand, e.g. ``modelzoos generate digits_cnn_seed --out out/compare/seed_reference
--models 100 --epochs 15 --engine reference``. Each comparison writes ``report.md``, ``report.json`` and
``compare.png`` into ``--results/compare_<name>/``, and all of them a summary
``--results/compare_engines.json`` (verdict, test counts, what differs, compare's own time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from modelzoos.catalogue import get_zoo
from modelzoos.compare import DIFFERS, ZooDirSide, compare, write_report
from modelzoos.files import write_json
from modelzoos.generate import generate

# name → zoo, models, epochs, and per side (folder, engine, environment)
COMPARISONS = {
    "seed_engines": ("digits_cnn_seed", 100, 15, ("seed_population", "population", {}),
                     ("seed_reference", "reference", {})),
    "hyp_engines": ("digits_cnn_hyp_rand", 128, 10, ("hyp_population", "population", {}),
                    ("hyp_reference", "reference", {})),
    "seed_layout": ("digits_cnn_seed", 100, 15, ("seed_population", "population", {}),
                    ("seed_population_nchw", "population", {"MODELZOOS_CHANNELS_LAST": "0"})),
}


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """``os.environ`` with ``values`` set, restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def zoo_side(zoos: Path, zoo: str, models: int, epochs: int, side: tuple) -> ZooDirSide:
    """The side's zoo directory, generated first if it is not finished."""
    folder, engine, env = side
    with environment(env):
        generate(get_zoo(zoo), zoos / folder, models=models, epochs=epochs, engine=engine, progress=True)
    return ZooDirSide(zoos / folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoos", default="out/compare", help="folder of the compared zoo directories")
    p.add_argument("--results", default="benchmarks/results", help="folder for the reports and the summary")
    p.add_argument("--only", nargs="*", choices=list(COMPARISONS), default=list(COMPARISONS))
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    zoos, results = Path(args.zoos), Path(args.results)
    summary_path = results / "compare_engines.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.only:
        zoo, models, epochs, a, b = COMPARISONS[name]
        sides = [zoo_side(zoos, zoo, models, epochs, s) for s in (a, b)]
        start, cpu = time.perf_counter(), time.process_time()
        result = compare(*sides, progress=True)
        seconds = {"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)}
        write_report(result, results / f"compare_{name}")
        summary[name] = {
            "zoo": zoo, "models": models, "epochs": epochs, "a": a[1:], "b": b[1:], "verdict": result.verdict,
            "counts": result.counts(), "tests": len(result.tests), "compare_time": seconds,
            "differs": [r for r in result.to_json()["summary"] if r["verdict"] == DIFFERS],
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                       f"{torch.__version__}, {torch.get_num_threads()} thread(s)"}
        write_json(summary_path, summary)
        print(f"{name}: {result.verdict} ({result.counts()}) in {seconds['wall_s']} s")


if __name__ == "__main__":
    main()
