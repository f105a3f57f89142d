"""Import speed of `modelzoos import` on synthetic releases, and the projected time for every released zoo.

Usage::

    python benchmarks/import_speed.py --work /tmp/import_bench --out benchmarks/results/import_speed.json
    python benchmarks/import_speed.py --work /tmp/b --models 50 --epochs 5 --resnet-models 1   # a quick look
    python benchmarks/import_speed.py --run-source SOURCE --run-spec SPEC --run-out DIR   # one import, as JSON

Steps (files written once; a rerun reuses them and measures again):

1. A synthetic MNIST CNN-s seed release (``--models`` trials × ``--epochs`` + 1 checkpoints, default the whole
   zoo: 1,000 × 51) in the release's exact format (``tests/fakerelease.py``: ``torch.save`` of the original
   ``module_list`` CNN per epoch, an Adam optimizer file beside each, params.json, result.json), as a folder,
   a zip (deflate, as ``zip -r``) and a plain tar; and a CIFAR-10 ResNet-18 release of ``--resnet-models``
   trials × ``--resnet-epochs`` + 1 checkpoints of 44.7 MB (plus an SGD momentum file each) as a plain tar.
2. Every import runs in a fresh process (its peak resident memory is the process's VmHWM; with ``--workers``
   2 also the largest worker's ``ru_maxrss``, which counts the pages a forked worker shares with its parent)
   into a fresh directory: folder, zip and tar with one worker, the tar with two, the tar with one worker and
   ``--optimizer-state``; the ResNet tar with one and two. Reported: wall seconds in total and of the writing phase
   (``produce``: reading, decoding and writing the chunks), checkpoints/s and MB/s of checkpoint files over the
   total, the SHA-256 rate of the archive alone.
3. Projection for every released zoo: checkpoints × (a + bytes / B), with the per-checkpoint cost a and the
   bandwidth B fitted to the one-worker tar imports of the CNN-s and ResNet-18 releases, plus the SHA-256 pass
   over the archive (checkpoint and optimizer files, the optimizer as 2× (Adam) or 1× (SGD) the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakerelease import (  # the release writer lives with the tests: torch.save only there
    FakeTrial,
    OriginalCNN,
    adam_state,
    cnn_params,
    cnn_results,
    evolve,
    original_resnet18,
    tar_folder,
    write_experiment,
    zip_folder,
)

from modelzoos.catalogue import TWIN_EPOCHS, get_zoo, list_zoos

OPT_SLOTS = {"adam": 2, "sgd": 1}  # optimizer tensors per parameter in the release's optimizer files
TWINS = ("mnist_cnn_seed", "svhn_cnn_seed")  # the zoos with released variational-dropout twins


def cnn_release(work: Path, models: int, epochs: int) -> Path:
    folder = work / "cnn" / "tune_zoo_mnist_uniform"
    if (work / "cnn" / "done").exists():
        return folder

    def trials():
        for i, seed in enumerate(range(1, models + 1)):
            torch.manual_seed(seed)
            model = OriginalCNN("cnn", 1, "tanh", 0.0, inserted=False)
            opt = adam_state(model, seed)
            states = evolve(model, epochs, seed)
            yield FakeTrial(f"NN_tune_trainable_c0371_{i:05d}_{i}_seed={seed}_2021-07-01_16-59-53",
                            cnn_params(seed, epochs=epochs), states, {e: opt for e in states},
                            cnn_results(epochs, seed))

    shutil.rmtree(folder, ignore_errors=True)
    write_experiment(folder.parent, folder.name, trials())
    zip_folder(folder, work / "cnn" / "mnist_seed.zip")
    tar_folder(folder, work / "cnn" / "mnist_seed.tar")
    (work / "cnn" / "done").write_text("")
    return folder


def resnet_release(work: Path, models: int, epochs: int) -> Path:
    tar = work / "resnet" / "cifar10_resnet18.tar"
    if (work / "resnet" / "done").exists():
        return tar
    root = work / "resnet"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    def trials():
        for i, seed in enumerate(range(1, models + 1)):
            torch.manual_seed(seed)
            model = original_resnet18()
            momentum = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            for p in model.parameters():
                momentum.state[p] = {"momentum_buffer": torch.zeros_like(p)}
            params = cnn_params(seed, model_type="Resnet18", channels=3, init="kaiming_uniform", activation="relu",
                                optimizer="sgd", lr=0.05, wd=5e-4, batch_size=256, epochs=epochs)
            states = evolve(model, epochs, seed)
            yield FakeTrial(f"NN_tune_trainable_a1b2c_{i:05d}_{i}_seed={seed}_2022-05-01_10-00-00", params, states,
                            {e: momentum.state_dict() for e in states}, cnn_results(epochs, seed, val=True))

    folder = write_experiment(root, "tune_zoo_cifar10_resnet18_kaiming_uniform", trials())
    tar_folder(folder, tar)
    shutil.rmtree(folder)
    (root / "done").write_text("")
    return tar


def spec(work: Path, base: str, epochs: int, models: int) -> Path:
    path = work / f"{base}_{models}x{epochs}.toml"
    path.write_text(textwrap.dedent(f"""
        extends = "{base}"
        name = "{base}"
        epochs = {epochs}
        [seeds]
        range = [1, {models}]
    """))
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: Linux's VmHWM (``ru_maxrss`` would also count the parent's peak,
    which the kernel carries across exec), elsewhere ``ru_maxrss``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args: argparse.Namespace) -> None:
    """Child process: one import; prints its measurements as JSON."""
    from modelzoos.importing import import_zoo

    torch.set_num_threads(1)
    out = Path(args.run_out)
    shutil.rmtree(out, ignore_errors=True)
    baseline = peak_rss_mb()  # the interpreter with its imports

    def cpu() -> float:
        return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    start, cpu_start = time.perf_counter(), cpu()
    s = import_zoo([args.run_source], get_zoo(args.run_spec), out, workers=args.run_workers, progress=False,
                   optimizer_state=args.run_optimizer_state)
    total = time.perf_counter() - start
    print(json.dumps({"seconds": total, "cpu_seconds": cpu() - cpu_start, "write_seconds": s.seconds,
                      "checkpoints": s.checkpoints, "megabytes": s.megabytes, "states": s.states,
                      "baseline_rss_mb": baseline,
                      "peak_rss_mb": peak_rss_mb(),
                      "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def measure(source: Path, spec_path: Path, out: Path, workers: int, optimizer_state: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--run-source", str(source), "--run-spec", str(spec_path), "--run-out",
           str(out), "--run-workers", str(workers), *(["--run-optimizer-state"] if optimizer_state else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    r = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    r |= {"source": source.name, "workers": workers, "optimizer_state": optimizer_state,
          "checkpoints_per_s": r["checkpoints"] / r["seconds"],
          "mb_per_s": r["megabytes"] / r["seconds"], "checkpoints_per_cpu_s": r["checkpoints"] / r["cpu_seconds"]}
    if workers == 1:
        r.pop("worker_peak_rss_mb")
    what = f"{source.name} workers={workers}{' optimizer-state' if optimizer_state else ''}"
    print(f"  {what}: {r['seconds']:.1f} s ({r['write_seconds']:.1f} s writing, "
          f"{r['cpu_seconds']:.1f} CPU s), {r['checkpoints_per_s']:.0f} checkpoints/s, {r['mb_per_s']:.1f} MB/s, "
          f"peak {r['peak_rss_mb']:.0f} MB (after imports {r['baseline_rss_mb']:.0f} MB)", flush=True)
    return r


def sha256_rate(path: Path) -> float:
    """MB/s of hashing ``path`` (after one read, so mostly from the page cache)."""
    h = hashlib.sha256()
    start = time.perf_counter()
    with open(path, "rb") as f:
        while block := f.read(8 * 2**20):
            h.update(block)
    return path.stat().st_size / 1e6 / (time.perf_counter() - start)


def projection(cnn: dict, resnet: dict, cnn_bytes: float, resnet_bytes: float, hash_mb_s: float) -> list[dict]:
    """Projected hours per released zoo (module docstring, step 3). A checkpoint's size is its float32 tensors
    plus the zip and pickle framing per tensor measured on the CNN-s release."""
    cnn_layout = get_zoo("mnist_cnn_seed").layout
    framing = (cnn_bytes - 4 * cnn_layout.size) / len(cnn_layout.entries)
    def fit(key: str) -> tuple[float, float]:
        """(a, B) of seconds per checkpoint t = a + bytes / B through the two measured points."""
        t1, t2 = cnn[key] / cnn["checkpoints"], resnet[key] / resnet["checkpoints"]
        bandwidth = (resnet_bytes - cnn_bytes) / max(t2 - t1, 1e-12)
        return max(t1 - cnn_bytes / bandwidth, 0.0), bandwidth

    (a, bandwidth), (a_cpu, bandwidth_cpu) = fit("seconds"), fit("cpu_seconds")
    rows = []
    zoos = [(z, z.epochs) for z in list_zoos(published=True)] + [(get_zoo(n), TWIN_EPOCHS) for n in TWINS]
    for zoo, epochs in zoos:
        twin = zoo.name in TWINS and epochs == TWIN_EPOCHS
        layout = zoo.layout
        ckpt = (4 * layout.size + framing * len(layout.entries)) * (2 if twin else 1)  # ARD: + log σ² per tensor
        n = zoo.num_models * (epochs + 1)
        slots = max(OPT_SLOTS[o] for o in zoo.grid["optimizer"])
        archive = n * ckpt * (1 + slots)
        hashing = archive / 1e6 / hash_mb_s
        rows.append({"zoo": f"{zoo.name}_sparse_vd" if twin else zoo.name, "checkpoints": n,
                     "checkpoint_gb": n * ckpt / 1e9, "archive_gb_estimate": archive / 1e9,
                     "hours_one_worker": (n * (a + ckpt / bandwidth) + hashing) / 3600,
                     "cpu_hours": (n * (a_cpu + ckpt / bandwidth_cpu) + hashing) / 3600})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/import_bench"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--resnet-models", type=int, default=3)
    p.add_argument("--resnet-epochs", type=int, default=2)
    p.add_argument("--run-source", help="child mode: import this source only and print the measurements")
    p.add_argument("--run-spec")
    p.add_argument("--run-out")
    p.add_argument("--run-workers", type=int, default=1)
    p.add_argument("--run-optimizer-state", action="store_true")
    args = p.parse_args()
    if args.run_source:
        run_one(args)
        return
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    folder = cnn_release(work, args.models, args.epochs)
    tar = resnet_release(work, args.resnet_models, args.resnet_epochs)
    print(f"releases ready in {time.perf_counter() - t:.0f} s", flush=True)
    cnn_spec = spec(work, "mnist_cnn_seed", args.epochs, args.models)
    resnet_spec = spec(work, "cifar10_resnet18_seed", args.resnet_epochs, args.resnet_models)
    runs = {}
    cnn_tar = work / "cnn" / "mnist_seed.tar"
    for name, source, workers, optimizer in (
            ("cnn_folder", folder, 1, False), ("cnn_zip", work / "cnn" / "mnist_seed.zip", 1, False),
            ("cnn_tar", cnn_tar, 1, False), ("cnn_tar_2_workers", cnn_tar, 2, False),
            ("cnn_tar_optimizer_state", cnn_tar, 1, True)):
        runs[name] = measure(source, cnn_spec, work / "out", workers, optimizer)
    for workers in (1, 2):
        runs[f"resnet_tar{'_2_workers' if workers == 2 else ''}"] = measure(tar, resnet_spec, work / "out", workers)
    hash_mb_s = sha256_rate(cnn_tar)
    cnn_bytes = runs["cnn_tar"]["megabytes"] * 1e6 / runs["cnn_tar"]["checkpoints"]
    resnet_bytes = runs["resnet_tar"]["megabytes"] * 1e6 / runs["resnet_tar"]["checkpoints"]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "release": {"cnn": {"models": args.models, "epochs": args.epochs, "checkpoint_bytes": cnn_bytes,
                            "tar_bytes": cnn_tar.stat().st_size,
                            "zip_bytes": (work / "cnn" / "mnist_seed.zip").stat().st_size},
                    "resnet": {"models": args.resnet_models, "epochs": args.resnet_epochs,
                               "checkpoint_bytes": resnet_bytes, "tar_bytes": tar.stat().st_size}},
        "runs": runs,
        "sha256_mb_per_s": hash_mb_s,
        "projection": projection(runs["cnn_tar"], runs["resnet_tar"], cnn_bytes, resnet_bytes, hash_mb_s),
    }
    total = sum(r["hours_one_worker"] for r in result["projection"])
    total_cpu = sum(r["cpu_hours"] for r in result["projection"])
    result |= {"projection_total_hours_one_worker": total, "projection_total_cpu_hours": total_cpu}
    print(f"sha256: {hash_mb_s:.0f} MB/s; projected import of every released zoo: {total:.1f} h with one worker "
          f"(wall, this load), {total_cpu:.1f} CPU hours")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["projection"]:
        print(f"  {row['zoo']:<28} {row['checkpoints']:>8,} checkpoints {row['checkpoint_gb']:>8.1f} GB "
              f"{row['hours_one_worker']:>7.2f} h {row['cpu_hours']:>7.2f} CPU h")


if __name__ == "__main__":
    main()
