"""Peak memory of writing and building a ResNet-18-shaped zoo larger than the memory it may use.

    python benchmarks/build_memory.py --out /tmp/build_memory --models 7 --epochs 3 --limit-mb 600

1. Writes a zoo directory of the ``cifar10_resnet18_seed`` shape (D = 11,173,962 floats, 44.7 MB per state)
   through the package's one writer (``export.produce``: epoch files, ``finalize`` streaming them into
   metadata.parquet, manifest.json) with a synthetic producer: random weights instead of training, so the
   zoo can be large without days of training; everything after the producer is the real code.
2. Runs ``modelzoos build`` on it in a fresh process.

Both steps run in child processes, each in its own cgroup (v1 memory controller, ``--limit-mb``) when this
machine allows it (root and /sys/fs/cgroup/memory), else unconstrained. Reported per step: exit code, wall
time, the child's peak resident memory (its own ``ru_maxrss``, printed at the end), the cgroup's peak usage
(resident memory plus page cache, which the kernel reclaims at the limit) and its OOM count; and whether
torch was imported. With
``--compare PATH`` the build also runs from another checkout (e.g. the code before this change) under the
same limit. Results: ``benchmarks/results/build_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
ROOT = Path(__file__).resolve().parent.parent

WRITE_ZOO = """
import json, sys
from dataclasses import dataclass, field
from importlib.metadata import version
import numpy as np
from modelzoos import export
from modelzoos.catalogue import METRICS, get_zoo

zoo = get_zoo("cifar10_resnet18_seed")
run = export.Run(zoo, models={models}, epochs={epochs}, engine="reference", chunk_size=1)


@dataclass
class Result:  # what export saves of an epoch (training.EpochResult's fields), without torch
    epoch: int
    weights: np.ndarray
    metrics: dict
    state: dict = field(default_factory=dict)

    def tensors(self):
        return {{"weights": self.weights}}


class Synthetic:
    run, schema, sections = run, export.METADATA_SCHEMA, ()

    def describe(self):
        return {{"format_version": export.FORMAT_VERSION, "run": run.identity(), "layout": zoo.layout.to_json(),
                "data": {{"recipe": zoo.data.to_dict(), "sizes": {{"train": 40000, "val": 10000, "test": 10000}},
                         "sha256": "synthetic", "num_classes": 10}},
                "versions": {{"modelzoos": version("modelzoos")}}, "device": "cpu",
                "numerics": {{"tf32": False, "channels_last": True, "compile": False}}}}

    def __call__(self, chunk, resume):
        seed = chunk[0].model_id
        for epoch in range(run.epochs + 1):
            w = np.random.default_rng([seed, epoch]).standard_normal((1, zoo.layout.size), dtype=np.float32)
            yield Result(epoch, w, {{m: [0.5] for m in METRICS}}, {{"step": np.array(epoch, dtype=np.int64)}})


export.produce({out!r}, Synthetic(), progress=False)
import resource
print(json.dumps({{"torch_imported": "torch" in sys.modules,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""

BUILD = """
import json, resource, sys
from modelzoos.cli import main
rc = main(["build", {zoo!r}, "--repo", {repo!r}, "--quiet"])
print(json.dumps({{"torch_imported": "torch" in sys.modules,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
sys.exit(rc)
"""


def cgroups_available() -> bool:
    return os.geteuid() == 0 and (CGROUP_ROOT / "memory.limit_in_bytes").exists()


def run_limited(code: str, limit_mb: int | None, pythonpath: Path, name: str, cwd: Path) -> dict:
    """Run ``code`` in a child Python (in a fresh cgroup limited to ``limit_mb`` when possible)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    group = None
    if limit_mb is not None and cgroups_available():
        group = CGROUP_ROOT / f"modelzoos_{name}_{os.getpid()}"
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
        if (group / "memory.memsw.limit_in_bytes").exists():  # no swapping out of the limit either
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit_mb * 2**20))
    start = time.perf_counter()
    enter = f"echo $$ > {group / 'cgroup.procs'} && " if group else ""
    proc = subprocess.run(["sh", "-c", f'{enter}exec "$0" -c "$1"', sys.executable, textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, cwd=cwd)  # not a checkout: ``-c`` puts the cwd first
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    result = {"returncode": proc.returncode, "wall_s": round(wall, 1),
              **(json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}),  # peak RSS, torch imported
              "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    if group is not None:
        result |= {"cgroup_limit_mb": limit_mb,
                   "cgroup_peak_usage_mb": round(int((group / "memory.max_usage_in_bytes").read_text()) / 2**20, 1),
                   "cgroup_limit_hits": int((group / "memory.failcnt").read_text()),
                   "oom_kills": next((int(line.split()[1]) for line in (group / "memory.oom_control").read_text()
                                      .splitlines() if line.startswith("oom_kill ")), None)}
        group.rmdir()
    return result


def size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="scratch folder (the zoo and the repository)")
    p.add_argument("--models", type=int, default=7, help="models (7: the fewest a published config takes)")
    p.add_argument("--epochs", type=int, default=3, help="epochs (states per model: epochs + 1)")
    p.add_argument("--limit-mb", type=int, default=600)
    p.add_argument("--compare", type=Path, default=None, help="another checkout to build the same zoo with")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "build_memory.json")
    args = p.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    zoo, repo = args.out / "zoo", args.out / "repo"
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_average": os.getloadavg(), "cgroup_v1": cgroups_available(),
              "models": args.models, "epochs": args.epochs, "floats_per_state": 11_173_962}
    report["write_zoo"] = run_limited(WRITE_ZOO.format(models=args.models, epochs=args.epochs, out=str(zoo)),
                                      args.limit_mb, ROOT, "write", args.out)
    report["zoo_mb"] = size_mb(zoo)
    report["build"] = run_limited(BUILD.format(zoo=str(zoo), repo=str(repo)), args.limit_mb, ROOT, "build", args.out)
    report["repo_mb"] = size_mb(repo) if repo.exists() else None
    if args.compare is not None:
        other = args.out / "repo_compare"
        report["build_compare"] = {"checkout": str(args.compare)} | run_limited(
            BUILD.format(zoo=str(zoo), repo=str(other)), args.limit_mb, args.compare, "compare", args.out)
    print(json.dumps(report, indent=2))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["build"]["returncode"] == 0 and report["write_zoo"]["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
