"""Bytes on disk of the weights column: modelzoos.publish's Parquet options against datasets' default writer.

    python benchmarks/parquet_size.py [ZOO_DIR] [--work DIR]

Without ZOO_DIR a digits_cnn_seed zoo of 100 models × epochs 0..5 is generated under --work (reused when it
is already there; generation is resumable). The zoo is built into a repository folder with
``modelzoos.publish.build_repo``; the same rows are then written by ``datasets.Dataset.to_parquet`` (datasets'
own writer: dictionary + snappy, not tunable) and, for reference, by pyarrow with one option changed at a
time. Reported: the compressed size of the weights column (sum over row groups of the Parquet column chunk
``weights.list.element``) ÷ the raw float32 bytes (rows × D × 4), and whole files ÷ raw. Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from modelzoos import publish
from modelzoos.catalogue import get_zoo
from modelzoos.export import ZooDir
from modelzoos.generate import generate


def weights_bytes(files: list[Path]) -> tuple[int, int]:
    """(compressed bytes of the weights leaf column, file bytes) summed over ``files``."""
    column = 0
    for f in files:
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            column += sum(rg.column(i).total_compressed_size for i in range(rg.num_columns)
                          if rg.column(i).path_in_schema.startswith("weights."))
    return column, sum(f.stat().st_size for f in files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("zoo_dir", nargs="?", help="a finished zoo directory (default: generate one under --work)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "modelzoos-bench"),
                   help="folder for the generated zoo and the written files")
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    work = Path(args.work)
    if args.zoo_dir:
        zd = ZooDir(args.zoo_dir)
    else:
        out = work / f"digits_cnn_seed_{args.models}x{args.epochs}"
        zd = generate(get_zoo("digits_cnn_seed"), out, models=args.models, epochs=args.epochs, progress=True)
    dim = zd.layout.size
    repo = work / "repo"
    t = time.perf_counter()
    publish.build_repo([zd.path], repo, progress=False)
    build_s = time.perf_counter() - t
    ours = sorted((repo / "data" / zd.zoo.name).glob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in ours)
    raw = rows * dim * 4

    results = [("modelzoos.publish (pyarrow)", "no dictionary, zstd, BYTE_STREAM_SPLIT, page index",
                *weights_bytes(ours))]
    table = datasets.Dataset.from_parquet([str(f) for f in ours], cache_dir=str(work / "hf-cache"))
    theirs = work / "datasets_default.parquet"
    table.to_parquet(str(theirs))
    results.append(("datasets `Dataset.to_parquet`", "its defaults: dictionary, snappy", *weights_bytes([theirs])))
    arrow = pq.read_table(ours)
    for label, options in [
        ("pyarrow `write_table` defaults", {}),
        ("pyarrow", {"use_dictionary": False, "compression": "snappy"}),
        ("pyarrow", {"use_dictionary": False, "compression": "zstd"}),
    ]:
        path = work / "variant.parquet"
        pq.write_table(arrow, path, **options)
        desc = ", ".join(f"{k}={v}" for k, v in options.items()) or "dictionary, snappy"
        results.append((label, desc, *weights_bytes([path])))
        path.unlink()

    print(f"Zoo `{zd.zoo.name}` ({zd.path}): {rows:,} states × D = {dim:,} float32 = {raw:,} raw bytes; "
          f"build_repo took {build_s:.1f} s.")
    print(f"Machine: {os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}, Python "
          f"{platform.python_version()}, pyarrow {pa.__version__}, datasets {datasets.__version__}.\n")
    print("| writer | Parquet options | weights column bytes | ÷ raw float32 | whole file(s) ÷ raw |")
    print("|---|---|---:|---:|---:|")
    for writer, opts, column, total in results:
        print(f"| {writer} | {opts} | {column:,} | {column / raw:.3f} | {total / raw:.3f} |")


if __name__ == "__main__":
    main()
