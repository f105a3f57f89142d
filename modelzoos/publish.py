"""Zoo directories → a folder laid out like the Hugging Face Hub dataset repository (docs/hub_format.md).

```
<repo>/
  README.md                                     dataset card: YAML `configs:` + body (templates in cards/)
  data/<config>/<split>-NNNNN-of-MMMMM.parquet  one row per model state, split by model
  data/<config>/zoo.json                        layout, spec and splits of the config
```
``build_repo`` writes one config per zoo directory (config name = zoo name) and regenerates the card from
every config present; ``validate_repo`` checks a folder before it is pushed; ``cli_build`` is the handler
of ``modelzoos build``.

Memory stays bounded by one row group (≤ ``ROW_GROUP_BYTES`` of weights): rows are read from the zoo's
safetensors files by slicing (only the bytes of the requested rows), assembled one row group at a time and
handed to ``pyarrow.parquet.ParquetWriter``. Shard counts (the ``MMMMM`` of the file names) are planned
from the row counts before anything is written; every file is written under a hidden temporary name and
renamed into place once all shards of the config exist.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import string
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features, List, Value
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from modelzoos.catalogue import Zoo, _order
from modelzoos.export import METADATA_SCHEMA, ZooDir, ZooFileError, twin_record

CONFIG_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
SPLITS = ("train", "validation", "test")
SPLIT_SEED = 42  # random.Random(42).shuffle of the sorted model ids
ROW_GROUP_BYTES = 64 * 2**20  # weights bytes per row group (float32 rows × D × 4)
MAX_FILE_BYTES = 500 * 10**6  # bytes per Parquet file
SHARD_HEADROOM = 0.9  # shards are planned for 90 % of MAX_FILE_BYTES from the raw (uncompressed) row size
ROW_OVERHEAD_BYTES = 256  # planned bytes per row for the metadata columns
MIN_MODELS = 7  # the smallest N with ⌊0.15·N⌋ ≥ 1: load_dataset cannot read an empty split
CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"

# The columns of a row: metadata.parquet's minus the pointers into the weights files, then the weights.
COLUMNS: tuple[pa.Field, ...] = tuple(f for f in METADATA_SCHEMA if f.name not in ("weights_file", "weights_row"))
_VALUE = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool"}


def vector_leaf(column: str) -> str:
    """The Parquet leaf of a fixed_size_list<float32> column (compliant nesting)."""
    return f"{column}.list.element"


WEIGHTS_COLUMN_PATH = vector_leaf("weights")
# writer options; each shard adds BYTE_STREAM_SPLIT for the leaves of its vector columns (``_write_shard``)
PARQUET_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": [f.name for f in COLUMNS if f.type == pa.string()],  # never on the vectors
    "write_page_index": True,
}

COLUMN_DOCS = {
    "zoo": "zoo (= config) name",
    "model_id": "position of the model in the zoo's enumeration",
    "epoch": "0 = initialised, untrained; e = after e epochs",
    "seed": "the model's seed",
    "init": "weight initialisation",
    "activation": "activation function",
    "optimizer": "optimizer",
    "lr": "learning rate (OneCycle: the peak)",
    "weight_decay": "coupled L2 coefficient",
    "dropout": "drop probability",
    "batch_size": "minibatch size",
    "epochs": "the protocol's epochs (the zoo may stop earlier)",
    "schedule": "learning-rate schedule",
    "train_loss": "epoch ≥ 1: running mean over the epoch's minibatches; epoch 0: eval-mode pass (nats)",
    "train_acc": "as train_loss, accuracy in [0, 1]",
    "val_loss": "eval-mode pass after the epoch (nats); NaN without a validation split",
    "val_acc": "eval-mode accuracy in [0, 1]; NaN without a validation split",
    "test_loss": "eval-mode pass after the epoch (nats)",
    "test_acc": "eval-mode accuracy in [0, 1]",
    "ggap": "train_acc − test_acc",
    "nonfinite": "the state holds NaN or ±inf weights",
    "sparsity": "sparsified twins only: zeroed conv + linear weights ÷ all conv + linear weights (biases excluded)",
}
# Sparsified twins (modelzoos.twins): configs <zoo>_sparse_<method> have these columns in addition.
TWIN_COLUMNS: tuple[pa.Field, ...] = (pa.field("sparsity", pa.float64()),)
LOG_SIGMA2 = "log_sigma2"  # variational-dropout twins: float32 [D'] per row, layout twins.log_sigma2_layout
CITATION = """@inproceedings{schurholt2022modelzoos,
  title     = {Model Zoos: A Dataset of Diverse Populations of Neural Network Models},
  author    = {Sch{\\"u}rholt, Konstantin and Taskiran, Diyar and Knyazev, Boris and Gir{\\'o}-i-Nieto, Xavier and Borth, Damian},
  booktitle = {Advances in Neural Information Processing Systems (Datasets and Benchmarks Track)},
  year      = {2022}
}"""  # noqa: E501
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
_SHARD = re.compile(r"^(?P<split>[a-z]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$")


# ---------------------------------------------------------------------------------------------------------
# Schema, splits and the shard plan
# ---------------------------------------------------------------------------------------------------------


def scalar_columns(twins: dict | None = None) -> tuple[pa.Field, ...]:
    """The metadata columns of a config (before the vectors): COLUMNS, plus TWIN_COLUMNS for twin configs."""
    return COLUMNS + (TWIN_COLUMNS if twins else ())


def vector_columns(dim: int, twins: dict | None = None) -> dict[str, int]:
    """{column: length} of the float32 vector columns: ``weights`` [D], plus ``log_sigma2`` [D'] for VD twins."""
    vectors = {"weights": dim}
    if twins and "log_sigma2_layout" in twins:
        last = twins["log_sigma2_layout"][-1]
        vectors[LOG_SIGMA2] = last["offset"] + math.prod(last["shape"])
    return vectors


def features(dim: int, twins: dict | None = None) -> Features:
    """The datasets features of a config whose flat weight vectors have length ``dim``; ``twins`` is the
    ``twins`` record of a sparsified-twin config (adds ``sparsity`` and, for VD, ``log_sigma2``)."""
    cols = {f.name: Value(_VALUE[f.type]) for f in scalar_columns(twins)}
    vectors = {name: List(Value("float32"), length=n) for name, n in vector_columns(dim, twins).items()}
    return Features({**cols, **vectors})


def arrow_schema(dim: int, config_json: dict) -> pa.Schema:
    """Arrow schema of the Parquet shards: the features under "huggingface" (as datasets writes them) and the
    config's zoo.json under "modelzoos"."""
    schema = features(dim, config_json.get("twins")).arrow_schema
    return schema.with_metadata({**schema.metadata, b"modelzoos": json.dumps(config_json).encode()})


def check_config_name(name: object, origin: str) -> str:
    """``name`` if it is a valid config name (``^[a-z0-9][a-z0-9_]*$``), else ValueError naming ``origin``."""
    if not isinstance(name, str) or not CONFIG_NAME.match(name):
        raise ValueError(f"{origin}: config name {name!r} is invalid; a config name (the zoo name) must match "
                         f"{CONFIG_NAME.pattern} (lowercase letters, digits, underscores; no path characters)")
    return name


def split_models(model_ids) -> dict[str, list[int]]:
    """Model ids → {split: sorted ids}: sorted, ``random.Random(42).shuffle``, then ⌊0.7N⌋ / ⌊0.15N⌋ / rest."""
    ids = sorted({int(i) for i in model_ids})
    random.Random(SPLIT_SEED).shuffle(ids)
    n = len(ids)
    a, b = n * 7 // 10, n * 15 // 100  # exact floors of 0.7·N and 0.15·N
    return {"train": sorted(ids[:a]), "validation": sorted(ids[a : a + b]), "test": sorted(ids[a + b :])}


def plan_shards(rows: int, dim: int, *, row_group_bytes: int = ROW_GROUP_BYTES,
                max_file_bytes: int = MAX_FILE_BYTES) -> list[list[int]]:
    """Row-group sizes per file for ``rows`` rows of ``dim`` float32 weights.

    Files hold ≤ ``SHARD_HEADROOM · max_file_bytes`` of raw rows (compressed they are smaller); row groups
    ≤ ``row_group_bytes`` of weights (one row when a single row is larger), and at least two per file
    with two rows or more (``IterableDataset.reshard()`` splits by row group). Zero rows → one empty file.
    """
    row_bytes = dim * 4 + ROW_OVERHEAD_BYTES
    per_file = max(1, int(max_file_bytes * SHARD_HEADROOM) // row_bytes)
    n_files = max(1, math.ceil(rows / per_file))
    sizes = [rows // n_files + (1 if i < rows % n_files else 0) for i in range(n_files)]
    per_group = max(1, row_group_bytes // (dim * 4))
    plan = []
    for size in sizes:
        group = min(per_group, max(1, math.ceil(size / 2)))
        plan.append([group] * (size // group) + ([size % group] if size % group else []))
    return plan


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One zoo directory to publish as the config ``name``."""

    name: str
    zd: ZooDir

    @property
    def dim(self) -> int:
        return self.zd.layout.size

    @property
    def twins(self) -> dict | None:
        """The zoo directory's ``twins`` record without the local source path (None for a trained zoo)."""
        return twin_record(self.zd.info) or None


def _open_sources(zoo_dirs: list[Path]) -> list[_Source]:
    if not zoo_dirs:
        raise ValueError("no zoo directories given; pass at least one directory written by `modelzoos generate`")
    sources: dict[str, _Source] = {}
    for path in map(Path, zoo_dirs):
        zd = ZooDir(path)
        name = check_config_name(zd.info["run"]["zoo"]["name"], str(path / "zoo.json"))
        zoos = set(zd.metadata["zoo"].unique())
        if zoos - {name}:
            raise ValueError(f"{path / 'metadata.parquet'} holds rows of zoo(s) {sorted(zoos - {name})}, zoo.json "
                             f"says {name!r}: regenerate the directory")
        models = zd.metadata["model_id"].nunique()
        if models < MIN_MODELS:
            raise ValueError(f"{path} holds {models} model(s) of zoo {name!r}; a published config needs at least "
                             f"{MIN_MODELS} so that every split (70/15/15 % of the models, floored) holds one "
                             "(load_dataset cannot read an empty split): generate more models with --models")
        if name in sources:
            other = sources[name].zd
            if other.info["layout"] != zd.info["layout"]:
                raise ValueError(f"{other.path} and {path} both hold zoo {name!r} but with different weight layouts "
                                 f"(D = {other.layout.size} and {zd.layout.size}); one config has one layout: "
                                 "publish one of them (or give one zoo another name in its spec)")
            raise ValueError(f"{other.path} and {path} both hold zoo {name!r}; a config is built from one zoo "
                             "directory: pass only one of them")
        sources[name] = _Source(name, zd)
    return list(sources.values())


def _config_json(src: _Source, splits: dict[str, list[int]], num_rows: dict[str, int]) -> dict:
    twins = {"twins": src.twins} if src.twins else {}
    return twins | {
        "format_version": 1,
        "config": src.name,
        "zoo": json.loads(json.dumps(src.zd.zoo.to_dict())),  # as plain JSON (tuples → lists)
        "layout": src.zd.info["layout"],
        "data": src.zd.info["data"],
        "splits": splits,
        "num_rows": num_rows,
        "epochs": sorted(int(e) for e in src.zd.metadata["epoch"].unique()),
        "num_models": sum(len(v) for v in splits.values()),
    }


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _read_weights(zd: ZooDir, rows: np.ndarray, out: np.ndarray, tensor_name: str = "weights") -> None:
    """Fill ``out[i]`` with the ``tensor_name`` vector (default the weights) of metadata row ``rows[i]``,
    reading only those rows of each file."""
    files = zd.metadata["weights_file"].to_numpy()[rows]
    file_rows = zd.metadata["weights_row"].to_numpy()[rows]
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, file in enumerate(files):
        by_file[file].append(i)
    for file, positions in by_file.items():
        path = zd.path / file
        try:
            with safe_open(str(path), framework="numpy") as f:
                tensor = f.get_slice(tensor_name)
                shape = tensor.get_shape()
                if len(shape) != 2 or shape[1] != out.shape[1]:
                    raise ZooFileError(f"{path} holds a {tensor_name} tensor of shape {shape}, the layout says "
                                       f"[models, {out.shape[1]}]: the file belongs to another zoo")
                for i in positions:
                    r = int(file_rows[i])
                    if not 0 <= r < shape[0]:
                        raise ZooFileError(f"{path} has {shape[0]} rows, metadata.parquet points at row {r}")
                    out[i] = tensor[r : r + 1][0]
        except (SafetensorError, OSError, ValueError) as err:
            raise ZooFileError(f"{path} is missing, corrupt or truncated ({err}). Fix: delete the chunk directory "
                               f"{path.parent} and rerun its `modelzoos generate` command") from err


def _row_group(frame_columns: dict[str, np.ndarray], rows: np.ndarray, vectors: dict[str, np.ndarray],
               schema: pa.Schema) -> pa.Table:
    """One row group: the metadata columns at ``rows`` and the vector columns, each [len(rows), n] (zero-copy)."""
    arrays = [pa.array(frame_columns[name][rows], type=schema.field(name).type) for name in frame_columns]
    for name, values in vectors.items():
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), type=schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_shard(path: Path, src: _Source, schema: pa.Schema, rows: np.ndarray, groups: list[int],
                 frame_columns: dict[str, np.ndarray], bar: tqdm) -> None:
    """Write the metadata rows ``rows`` (in order) as one Parquet file with row groups of sizes ``groups``.

    An empty split gets a file with the schema and no row group (datasets reads it as 0 rows; a row group of
    0 rows would make it fail with "BatchSize must be greater than 0").
    """
    vectors = vector_columns(src.dim, src.twins)
    encoding = {vector_leaf(name): "BYTE_STREAM_SPLIT" for name in vectors}
    with pq.ParquetWriter(path, schema, **PARQUET_OPTIONS, column_encoding=encoding) as writer:
        start = 0
        for size in groups:
            sel = rows[start : start + size]
            values = {name: np.empty((size, n), dtype=np.float32) for name, n in vectors.items()}
            for name, out in values.items():
                _read_weights(src.zd, sel, out, name)
            writer.write_table(_row_group(frame_columns, sel, values, schema), row_group_size=size)
            bar.update(size)
            start += size
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build_config(src: _Source, cdir: Path, *, row_group_bytes: int, max_file_bytes: int, progress: bool) -> None:
    meta = src.zd.metadata
    splits = split_models(meta["model_id"])
    order = meta.sort_values(["model_id", "epoch"], kind="stable").index.to_numpy()
    model_of = meta["model_id"].to_numpy()[order]
    split_rows = {s: order[np.isin(model_of, ids)] for s, ids in splits.items()}
    config = _config_json(src, splits, {s: len(r) for s, r in split_rows.items()})
    schema = arrow_schema(src.dim, config)
    frame_columns = {f.name: meta[f.name].to_numpy() for f in scalar_columns(src.twins)}

    created = not cdir.exists()
    cdir.mkdir(parents=True, exist_ok=True)
    for stale in cdir.glob(".*.tmp"):  # temporary files of an interrupted build
        stale.unlink()
    written: list[tuple[Path, Path]] = []
    try:
        with tqdm(total=len(meta), desc=src.name, unit="row", disable=not progress) as bar:
            for split, rows in split_rows.items():
                plan = plan_shards(len(rows), sum(vector_columns(src.dim, src.twins).values()),
                                   row_group_bytes=row_group_bytes, max_file_bytes=max_file_bytes)
                start = 0
                for i, groups in enumerate(plan):
                    final = cdir / shard_name(split, i, len(plan))
                    tmp = cdir / f".{final.name}.{uuid.uuid4().hex}.tmp"
                    written.append((tmp, final))
                    _write_shard(tmp, src, schema, rows[start : start + sum(groups)], groups, frame_columns, bar)
                    start += sum(groups)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        if created:
            cdir.rmdir()
        raise
    new = {final for _, final in written}
    _write_json(cdir / "zoo.json", config)
    for tmp, final in written:
        os.replace(tmp, final)
    for old in cdir.glob("*.parquet"):  # shards of a previous build of this config
        if old not in new:
            old.unlink()


def build_repo(zoo_dirs: list[Path], repo: Path, progress: bool = True, *, repo_id: str | None = None,
               row_group_bytes: int = ROW_GROUP_BYTES, max_file_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """Write one config per zoo directory into the repository folder ``repo`` and regenerate its README.

    Configs already in ``repo`` and not named here stay untouched; a config built again is replaced (its old
    shards are deleted after the new ones are in place). Returns the config names built, in the given order.
    ``repo_id`` (``org/name``) goes into the card's usage snippets. Raises ValueError for an invalid config
    name or two directories of one zoo, ZooFileError for a damaged zoo directory.
    """
    sources = _open_sources(list(zoo_dirs))
    repo = Path(repo)
    built = []
    try:
        for src in sources:
            _build_config(src, repo / "data" / src.name, row_group_bytes=row_group_bytes,
                          max_file_bytes=max_file_bytes, progress=progress)
            built.append(src.name)
    finally:
        if built:  # the card lists what is there, even when a later zoo failed
            render_card(repo, repo_id=repo_id)
    return built


# ---------------------------------------------------------------------------------------------------------
# The dataset card
# ---------------------------------------------------------------------------------------------------------


def _template(name: str) -> string.Template:
    path = CARDS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"card template {path} is missing (the cards/ folder of the modelzoos source tree)")
    return string.Template(path.read_text())


def read_configs(repo: Path) -> dict[str, dict]:
    """{config: its data/<config>/zoo.json} for every config folder of ``repo``, in catalogue order."""
    data = Path(repo) / "data"
    configs = {}
    for cdir in sorted(data.iterdir()) if data.is_dir() else []:
        if not cdir.is_dir() or cdir.name.startswith("."):
            continue
        path = cdir / "zoo.json"
        if not path.is_file():
            if any(cdir.glob("*.parquet")):
                raise ValueError(f"{cdir} holds Parquet files but no zoo.json: rebuild that config with "
                                 "`modelzoos build` or delete the folder")
            continue
        try:
            configs[cdir.name] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); rebuild that config with `modelzoos build`") from err
    return dict(sorted(configs.items(), key=lambda kv: _order(kv[0])))


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a number of rows."""
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>1B"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(values) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _seeds_rule(seeds: dict) -> str:
    if "range" in seeds:
        a, b = seeds["range"]
        return (f"seeds {a}…{b}: every grid point is trained once per seed ({b - a + 1:,} replicates); all "
                "training randomness of a model derives from its seed (column `seed`)")
    return (f"{seeds['random']} models per grid point, each with its own seed drawn with "
            f"`numpy.random.default_rng({seeds['draw_seed']}).integers({seeds['low']}, {seeds['high']}, "
            "size=models)`")


_OPTIMIZERS = {"adam": "Adam (coupled L2 weight decay)",
               "sgd": "SGD with momentum 0.9 (coupled L2 weight decay; OneCycle cycles the momentum 0.95↔0.85)"}
_SCHEDULES = {"constant": "constant learning rate",
              "onecycle": "OneCycle, stepped per batch (the `lr` column is its peak `max_lr`)"}


def _config_section(name: str, cfg: dict, repo_id: str) -> str:
    zoo = Zoo.from_dict(cfg["zoo"], f"data/{name}/zoo.json")
    layout = cfg["layout"]
    dim = layout[-1]["offset"] + math.prod(layout[-1]["shape"])
    parameters = sum(math.prod(e["shape"]) for e in layout if e["kind"] == "parameter")
    per_split = [[s, f"{len(cfg['splits'][s]):,}", f"{cfg['num_rows'][s]:,}"] for s in SPLITS]
    epochs = cfg["epochs"]
    models, states = cfg["num_models"], sum(cfg["num_rows"].values())
    subset = []
    if models < zoo.num_models:
        subset.append(f"the first {models:,} of the zoo's {zoo.num_models:,} models")
    stored = f"epochs {epochs[0]}–{epochs[-1]}" if len(epochs) > 1 else f"epoch {epochs[0]} only"
    if epochs[-1] < zoo.epochs:
        first = f"epochs {epochs[0]}–{epochs[-1]}" if len(epochs) > 1 else f"only epoch {epochs[0]}"
        subset.append(f"{first} of the protocol's {zoo.epochs}")
    coverage = ("This config holds " + " and ".join(subset) + ".") if subset else "This config holds the whole zoo."
    recipe = cfg["data"]["recipe"]
    sizes = cfg["data"].get("sizes", {})
    data_recipe = (f"`{recipe['dataset']}` at {recipe['size']}×{recipe['size']} ({recipe['geometry']}), "
                   f"{'grayscale, ' if recipe.get('grayscale') else ''}normalised with mean {recipe['mean']} / "
                   f"std {recipe['std']}, augmentation `{recipe.get('augment', 'none')}`"
                   f"{' (also on validation)' if recipe.get('augment_val') else ''}; images train / val / test "
                   f"{sizes.get('train', '?'):,} / {sizes.get('val', '?'):,} / {sizes.get('test', '?'):,} "
                   f"(split seed {recipe.get('split_seed', '?')}); {cfg['data'].get('num_classes', '?')} classes")
    twins = cfg.get("twins")
    columns = [[f"`{f.name}`", _VALUE[f.type], COLUMN_DOCS[f.name]] for f in scalar_columns(twins)]
    columns.append(["`weights`", f"fixed_size_list<float32>[{dim}]",
                    f"the flat state, `List(Value(\"float32\"), length={dim})`; layout below"
                    + ("; sparse: masked weights are exactly 0" if twins else "")])
    vectors = vector_columns(dim, twins)
    if LOG_SIGMA2 in vectors:
        columns.append([f"`{LOG_SIGMA2}`", f"fixed_size_list<float32>[{vectors[LOG_SIGMA2]}]",
                        "variational dropout's log σ² of every conv weight, conv bias and linear weight "
                        "(layout `twins.log_sigma2_layout` of zoo.json); log α = log σ² − 2·log(|w| + 1e-15)"])
    layout_rows = [[f"`{e['name']}`", "×".join(map(str, e["shape"])) or "scalar", str(e["offset"]), e["kind"]]
                   for e in layout]
    return _template("config_section.md.tmpl").substitute(
        config=name,
        description=zoo.description or "(no description)",
        source=(f"original experiment directory `{zoo.source}`" if zoo.source
                else "not a zoo of the original release (no original experiment directory)"),
        zoo_name=zoo.name,
        coverage=coverage,
        models=f"{models:,}",
        states=f"{states:,}",
        epochs_stored=stored,
        split_table=_md_table(["split", "models", "states (rows)"], per_split),
        architecture=zoo.architecture,
        parameters=f"{parameters:,}",
        dim=f"{dim:,}",
        dim_raw=str(dim),
        input="×".join(map(str, (zoo.in_channels, zoo.data.size, zoo.data.size))),
        classes=str(zoo.num_classes),
        grid_table=_md_table(["axis", "values"], [[a, _fmt(v)] for a, v in cfg["zoo"]["grid"].items()]),
        seeds=_seeds_rule(cfg["zoo"]["seeds"]),
        optimizer="; ".join(_OPTIMIZERS.get(o, o) for o in cfg["zoo"]["grid"]["optimizer"]),
        batch_size=str(zoo.batch_size),
        epochs_protocol=str(zoo.epochs),
        schedule=_SCHEDULES.get(zoo.schedule, zoo.schedule),
        data_recipe=data_recipe,
        notes="\n".join(f"- {n}" for n in zoo.notes) or "- none",
        columns_table=_md_table(["column", "Arrow type", "meaning"], columns),
        layout_table=_md_table(["tensor", "shape", "offset", "kind"], layout_rows),
        repo_id=repo_id,
        last_epoch=str(epochs[-1]),
        twins=_twins_section(twins),
    )


_METHODS = {
    "vd": ("variational dropout (Molchanov et al. 2017, arXiv 1701.05369) as the original twins: per-weight "
           "log σ² initialised to −10, local reparameterisation, KL weight min(1, 0.01·e/25), weights with "
           "log α ≥ 3 zeroed"),
    "mp": ("gradual global magnitude pruning (Zhu & Gupta 2017, arXiv 1710.01878) to 80 % of the conv + linear "
           "weights on a cubic schedule over 20 epochs, then 5 epochs of fine-tuning; our settings (the original "
           "published none)"),
}


def _twins_section(twins: dict | None) -> str:
    if not twins:
        return ""
    src = twins["source_run"]["zoo"]["name"]
    return (f"**Sparsified twins** of `{src}`: every model's state after epoch {twins['source_epoch']} trained "
            f"for 25 more epochs with {_METHODS[twins['method']]}. Epoch 0 is the dense source model (its "
            "accuracy equals the source's final one), epochs 1–25 the sparse model after each epoch; column "
            "`sparsity` per row. Settings (also under `twins` in `zoo.json`): "
            f"`{json.dumps(twins['settings'], ensure_ascii=False)}`.\n")


def render_card(repo: Path, *, repo_id: str | None = None) -> str:
    """Write ``repo``/README.md from every config present (data/<config>/zoo.json) and return its text.

    ``repo_id`` (``org/name``) is used in the usage snippets; without it they show ``ORG/NAME``.
    """
    repo = Path(repo)
    configs = read_configs(repo)
    if not configs:
        raise ValueError(f"{repo} holds no config (no data/<config>/zoo.json); build one with `modelzoos build`")
    repo_id = repo_id or "ORG/NAME"
    entries = []
    for i, name in enumerate(configs):
        entry = {"config_name": name}
        if i == 0:
            entry["default"] = True
        entry["data_files"] = [{"split": s, "path": f"data/{name}/{s}-*.parquet"} for s in SPLITS]
        entries.append(entry)
    total_rows = sum(sum(c["num_rows"].values()) for c in configs.values())
    header = _template("README.header.yaml.tmpl").substitute(
        size_category=size_category(total_rows),
        configs=yaml.safe_dump({"configs": entries}, sort_keys=False, allow_unicode=True),
    )
    overview = []
    for name, cfg in configs.items():
        layout = cfg["layout"]
        dim = layout[-1]["offset"] + math.prod(layout[-1]["shape"])
        overview.append([f"[`{name}`](#{name})", cfg["zoo"]["architecture"], f"{cfg['num_models']:,}",
                         f"{sum(cfg['num_rows'].values()):,}", f"{dim:,}"])
    first = next(iter(configs))
    body = _template("body.md.tmpl").substitute(
        num_configs=str(len(configs)),
        total_rows=f"{total_rows:,}",
        overview_table=_md_table(["config", "architecture", "models", "states (rows)", "D"], overview),
        default_config=first,
        default_last_epoch=str(configs[first]["epochs"][-1]),
        repo_id=repo_id,
        config_sections="\n".join(_config_section(n, c, repo_id) for n, c in configs.items()),
        citation=CITATION,
    )
    text = header + "\n" + body
    meta = yaml.safe_load(_yaml_header(text, repo / "README.md"))
    if [c["config_name"] for c in meta["configs"]] != list(configs):  # the template must keep the YAML intact
        raise RuntimeError(f"the card templates in {CARDS_DIR} produced a YAML header that does not list the configs")
    path = repo / "README.md"
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return text


def _yaml_header(text: str, path: Path) -> str:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{path}: no YAML header (the file must start with a line `---`)")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i])
    raise ValueError(f"{path}: the YAML header is not closed by a line `---`")


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def _check_card(repo: Path, problems: list[str]) -> list[str]:
    """Config names listed by README.md (problems appended); [] when the card is unusable."""
    readme = repo / "README.md"
    if not readme.is_file():
        problems.append(f"{readme} is missing (run `modelzoos build`, which writes it)")
        return []
    try:
        meta = yaml.safe_load(_yaml_header(readme.read_text(), readme))
    except (ValueError, yaml.YAMLError) as err:
        problems.append(f"{readme}: unreadable YAML header ({err})")
        return []
    entries = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not entries:
        problems.append(f"{readme}: the YAML header has no `configs:` list")
        return []
    names, defaults = [], []
    for k, entry in enumerate(entries):
        name = entry.get("config_name") if isinstance(entry, dict) else None
        try:
            check_config_name(name, f"{readme} configs[{k}]")
        except ValueError as err:
            problems.append(str(err))
            continue
        if name in names:
            problems.append(f"{readme}: config {name!r} is listed twice")
            continue
        names.append(name)
        if entry.get("default") is True:
            defaults.append(name)
        expected = [{"split": s, "path": f"data/{name}/{s}-*.parquet"} for s in SPLITS]
        if entry.get("data_files") != expected:
            problems.append(f"{readme}: config {name!r} has data_files {entry.get('data_files')!r}, expected "
                            f"{expected!r}")
    if len(defaults) != 1:
        problems.append(f"{readme}: exactly one config must have `default: true`, found {len(defaults)}"
                        f"{' (' + ', '.join(defaults) + ')' if defaults else ''}")
    for key in ("license", "pretty_name", "size_categories", "task_categories", "tags"):
        if key not in meta:
            problems.append(f"{readme}: the YAML header lacks `{key}`")
    return names


def _check_config(repo: Path, name: str, problems: list[str]) -> None:
    cdir = repo / "data" / name
    zoo_json = cdir / "zoo.json"
    try:
        cfg = json.loads(zoo_json.read_text())
    except FileNotFoundError:
        problems.append(f"{zoo_json} is missing")
        return
    except json.JSONDecodeError as err:
        problems.append(f"{zoo_json} is not valid JSON ({err})")
        return
    try:
        layout = cfg["layout"]
        dim = layout[-1]["offset"] + math.prod(layout[-1]["shape"])
        splits, num_rows = cfg["splits"], cfg["num_rows"]
        if cfg["config"] != name:
            problems.append(f"{zoo_json} says config {cfg['config']!r}, its folder is {name!r}")
    except (KeyError, IndexError, TypeError) as err:
        problems.append(f"{zoo_json} lacks the key {err} (format: docs/hub_format.md)")
        return
    seen: dict[int, str] = {}
    for split in SPLITS:
        for m in splits.get(split, []):
            if m in seen:
                problems.append(f"{zoo_json}: model {m} is in both {seen[m]} and {split}")
            seen[m] = split
    reference: tuple[Path, pa.Schema] | None = None
    for split in SPLITS:
        files = sorted(cdir.glob(f"{split}-*.parquet"))
        if not files:
            problems.append(f"{cdir}: no {split}-*.parquet file")
            continue
        counts = set()
        for f in files:
            match = _SHARD.match(f.name)
            if not match or match["split"] != split:
                problems.append(f"{f}: name is not {split}-NNNNN-of-MMMMM.parquet")
                continue
            counts.add(int(match["n"]))
        if len(counts) == 1 and sorted(f.name for f in files) != [shard_name(split, i, n) for n in counts
                                                                     for i in range(n)]:
            problems.append(f"{cdir}: {split} shards {[f.name for f in files]} do not form a complete "
                            f"0..{next(iter(counts)) - 1} of-{next(iter(counts)):05d} set")
        elif len(counts) > 1:
            problems.append(f"{cdir}: {split} shards of different builds mixed (of-counts {sorted(counts)})")
        rows, models = 0, set()
        for f in files:
            try:
                pf = pq.ParquetFile(f)
                schema = pf.schema_arrow
                ids = pq.read_table(f, columns=["model_id"]).column("model_id").to_numpy()
            except (pa.ArrowException, OSError, KeyError) as err:
                problems.append(f"{f}: not a readable Parquet file of this format ({type(err).__name__}: {err})")
                continue
            if reference is None:
                reference = (f, schema)
                _check_schema(f, schema, cfg, dim, problems)
            elif not schema.equals(reference[1], check_metadata=True):
                problems.append(f"{f}: schema differs from {reference[0]}")
            if f.stat().st_size > MAX_FILE_BYTES:
                problems.append(f"{f}: {f.stat().st_size:,} bytes, more than the {MAX_FILE_BYTES:,} allowed")
            floats = sum(vector_columns(dim, cfg.get("twins")).values())
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if n > 1 and n * floats * 4 > ROW_GROUP_BYTES:
                    problems.append(f"{f}: row group {g} holds {n * floats * 4:,} bytes of weights, more than "
                                    f"{ROW_GROUP_BYTES:,}")
            rows += len(ids)
            models.update(int(m) for m in np.unique(ids))
        if rows != num_rows.get(split):
            problems.append(f"{cdir}: {split} files hold {rows} rows, zoo.json says {num_rows.get(split)}")
        if models != set(splits.get(split, [])):
            problems.append(f"{cdir}: {split} files hold models {sorted(models ^ set(splits.get(split, [])))[:10]} "
                            f"that zoo.json puts elsewhere (or the reverse)")


def _check_schema(path: Path, schema: pa.Schema, cfg: dict, dim: int, problems: list[str]) -> None:
    weights = schema.field("weights").type if "weights" in schema.names else None
    if not (pa.types.is_fixed_size_list(weights) and weights.list_size == dim
            and weights.value_type == pa.float32()):
        problems.append(f"{path}: column weights is {weights}, zoo.json's layout needs fixed_size_list<float>[{dim}]")
    expected_features = features(dim, cfg.get("twins"))
    if schema.names != list(expected_features):
        problems.append(f"{path}: columns {schema.names}, expected {list(expected_features)}")
    metadata = schema.metadata or {}
    try:
        feats = Features.from_arrow_schema(schema)
        if feats != expected_features:
            problems.append(f"{path}: datasets features {feats} differ from the expected {expected_features}")
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as err:
        problems.append(f"{path}: unreadable `huggingface` schema metadata ({err})")
    if b"huggingface" not in metadata:
        problems.append(f"{path}: no `huggingface` schema metadata")
    try:
        if json.loads(metadata.get(b"modelzoos", b"null")) != cfg:
            problems.append(f"{path}: its `modelzoos` schema metadata differs from zoo.json (mixed builds?)")
    except json.JSONDecodeError as err:
        problems.append(f"{path}: unreadable `modelzoos` schema metadata ({err})")


def validate_repo(repo: Path) -> list[str]:
    """Check a repository folder before pushing; return its config names (card order) or raise ValueError
    listing every problem found, each naming its file."""
    repo = Path(repo)
    problems: list[str] = []
    names = _check_card(repo, problems)
    data = repo / "data"
    present = {p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")} if data.is_dir() else set()
    for extra in sorted(present - set(names)):
        problems.append(f"{data / extra} is not listed in README.md's configs (rerun `modelzoos build` to "
                        "regenerate the card, or delete the folder)")
    for name in names:
        _check_config(repo, name, problems)
    if problems:
        raise ValueError(f"{repo} is not ready to push ({len(problems)} problem(s)):\n- " + "\n- ".join(problems))
    return names


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def cli_build(args) -> int:
    """``modelzoos build ZOO_DIR... --repo DIR [--quiet]``: build, validate and say how to load the repo."""
    repo = Path(args.repo).resolve()
    built = build_repo([Path(d) for d in args.zoo_dirs], repo, progress=not args.quiet)
    validate_repo(repo)
    configs = read_configs(repo)
    size = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file() and not f.name.startswith("."))
    width = max(map(len, configs))
    print(f"built {', '.join(built)}; {repo} holds {len(configs)} config(s), {_size(size)}:")
    for name, cfg in configs.items():
        rows = "  ".join(f"{s} {cfg['num_rows'][s]:,} rows ({len(cfg['splits'][s]):,} models)" for s in SPLITS)
        print(f"  {name.ljust(width)}  {rows}")
    print("load it with:")
    print("  from datasets import load_dataset")
    print(f"  ds = load_dataset({json.dumps(str(repo))}, {json.dumps(built[0])}, split=\"train\")")
    return 0
