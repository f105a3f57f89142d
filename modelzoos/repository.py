"""The dataset repository format (docs/hub_format.md): what a published config is, and one validator.

A repository folder (laid out exactly like the Hugging Face Hub dataset repository) holds::

    README.md                                     dataset card: YAML header listing ``configs:`` + body
    data/<config>/<split>-NNNNN-of-MMMMM.parquet  one row per model state, split by model
    data/<config>/zoo.json                        the config's ``ConfigInfo`` as JSON

``modelzoos.publish`` writes it, ``modelzoos.card`` writes its README, ``modelzoos.hub`` pushes it and
``modelzoos.loading`` reads it; all of them take the format from here: the typed ``ConfigInfo`` (with its
``FORMAT_VERSION``, split names and columns), the split rule, the shard names and size bounds, the
card's YAML header, and ``validate_repo``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features, List, Value

from modelzoos.catalogue import SpecError, Zoo, check_name, table_order
from modelzoos.export import METADATA_SCHEMA
from modelzoos.layout import Layout

FORMAT_VERSION = 1  # of data/<config>/zoo.json
README = "README.md"
DATA_DIR = "data"
SPLITS = ("train", "validation", "test")
SPLIT_SEED = 42  # random.Random(42).shuffle of the sorted model ids
MIN_MODELS = 7  # the smallest N with ⌊0.15·N⌋ ≥ 1: load_dataset cannot read an empty split
ROW_GROUP_BYTES = 64 * 2**20  # vector bytes per row group (float32 rows × floats × 4); more only for one row
MAX_FILE_BYTES = 500 * 10**6  # bytes per Parquet file
WEIGHTS = "weights"  # the column of flat float32 weight vectors [D]
LOG_SIGMA2 = "log_sigma2"  # variational-dropout twins: float32 [D'] per row, layout twins.log_sigma2_layout

# The scalar columns of a row: metadata.parquet's minus the pointers into the weights files; then the vectors.
COLUMNS: tuple[pa.Field, ...] = tuple(f for f in METADATA_SCHEMA if f.name not in ("weights_file", "weights_row"))
TWIN_COLUMNS: tuple[pa.Field, ...] = (pa.field("sparsity", pa.float64()),)  # sparsified twins add these
IMPORT_COLUMNS: tuple[pa.Field, ...] = (pa.field("trial", pa.string()),)  # imports of the original release add these
VALUE_TYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool"}
SHARD = re.compile(r"^(?P<split>[a-z]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)


class RepositoryError(ValueError):
    """A repository folder or one of its files does not follow the format; the message names the file."""


def split_models(model_ids) -> dict[str, list[int]]:
    """Model ids → {split: sorted ids}: sorted, ``random.Random(42).shuffle``, then ⌊0.7N⌋ / ⌊0.15N⌋ / rest."""
    ids = sorted({int(i) for i in model_ids})
    random.Random(SPLIT_SEED).shuffle(ids)
    n = len(ids)
    a, b = n * 7 // 10, n * 15 // 100  # exact floors of 0.7·N and 0.15·N
    return {"train": sorted(ids[:a]), "validation": sorted(ids[a : a + b]), "test": sorted(ids[a + b :])}


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def vector_leaf(column: str) -> str:
    """The Parquet leaf of a fixed_size_list<float32> column (compliant nesting)."""
    return f"{column}.list.element"


# ---------------------------------------------------------------------------------------------------------
# One config
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigInfo:
    """What ``data/<config>/zoo.json`` says about one config of a dataset repository.

    ``layout`` places every tensor in the flat ``weights`` vector; ``zoo`` is the resolved spec (architecture,
    data recipe, training protocol, grid); ``data`` the source zoo's image data record (``recipe``, ``sizes``,
    ``sha256``, ``num_classes``); ``splits`` the model ids of each split; ``num_rows`` the rows per split;
    ``epochs`` the stored epochs; ``twins`` the twin record of a sparsified-twin config (method, settings,
    source run, ``log_sigma2_layout`` for VD; None otherwise); ``imported`` the import record of a config
    converted from the original release (``modelzoos import``: release record, source files, missing models and
    states; None otherwise); ``source`` the file it was read from.
    """

    config: str
    layout: Layout
    zoo: Zoo
    data: dict
    splits: dict[str, list[int]]
    num_rows: dict[str, int]
    epochs: list[int]
    num_models: int
    twins: dict | None = None
    imported: dict | None = None
    source: str = field(default="", compare=False)

    def split_of(self, model_id: int) -> str:
        """The split holding ``model_id`` (all its states are in that split)."""
        for split, ids in self.splits.items():
            if model_id in ids:
                return split
        raise KeyError(f"model {model_id} is in no split of config {self.config!r} ({self.num_models} models)")

    @property
    def scalar_columns(self) -> tuple[pa.Field, ...]:
        """The metadata columns of a row, in order (before the vectors)."""
        return COLUMNS + (TWIN_COLUMNS if self.twins else ()) + (IMPORT_COLUMNS if self.imported else ())

    @property
    def vectors(self) -> dict[str, int]:
        """{column: length} of the float32 vector columns: ``weights`` [D], plus ``log_sigma2`` [D'] for VD twins."""
        out = {WEIGHTS: self.layout.size}
        if self.twins and "log_sigma2_layout" in self.twins:
            out[LOG_SIGMA2] = Layout.from_json(self.twins["log_sigma2_layout"]).size
        return out

    @property
    def features(self) -> Features:
        """The ``datasets`` features of a row (exact types: fixed-length float32 lists)."""
        cols = {f.name: Value(VALUE_TYPES[f.type]) for f in self.scalar_columns}
        return Features({**cols, **{name: List(Value("float32"), length=n) for name, n in self.vectors.items()}})

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the Parquet shards: the features under "huggingface" (as datasets writes them) and
        this zoo.json under "modelzoos", so every file describes itself."""
        schema = self.features.arrow_schema
        return schema.with_metadata({**schema.metadata, b"modelzoos": json.dumps(self.to_json()).encode()})

    def to_json(self) -> dict:
        """The zoo.json of the config (plain JSON)."""
        return ({"twins": self.twins} if self.twins else {}) | {
            "format_version": FORMAT_VERSION, "config": self.config, "zoo": self.zoo.to_dict(),
            "layout": self.layout.to_json(), "data": self.data, "splits": self.splits, "num_rows": self.num_rows,
            "epochs": self.epochs, "num_models": self.num_models} | ({"import": self.imported} if self.imported else {})

    @classmethod
    def from_json(cls, raw: Any, origin: str) -> ConfigInfo:
        """Parse a config's zoo.json (``origin`` names it in errors); RepositoryError on a bad file."""
        if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
            got = raw.get("format_version") if isinstance(raw, dict) else type(raw).__name__
            raise RepositoryError(f"{origin}: format_version {got!r} is not {FORMAT_VERSION}; this modelzoos reads "
                                  f"version {FORMAT_VERSION} (upgrade modelzoos, or rebuild the repository)")
        missing = [k for k in ("config", "zoo", "layout", "data", "splits") if k not in raw]
        if missing:
            raise RepositoryError(f"{origin} lacks the key(s) {missing}; rebuild the repository with `modelzoos build`")
        try:
            zoo = Zoo.from_dict(raw["zoo"], f"{origin} (zoo)")
            layout = Layout.from_json(raw["layout"])
            splits = {k: [int(i) for i in v] for k, v in raw["splits"].items()}
        except (SpecError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise RepositoryError(f"{origin}: invalid zoo spec, layout or splits: {err}") from err
        if layout != zoo.layout:
            raise RepositoryError(f"{origin}: the layout ({layout.size} floats) is not the layout of the zoo's "
                                  f"architecture {zoo.architecture!r} ({zoo.layout.size} floats); the file is corrupt")
        return cls(config=check_name(raw["config"], origin), layout=layout, zoo=zoo, data=raw["data"],
                   splits=splits, num_rows={k: int(v) for k, v in raw.get("num_rows", {}).items()},
                   epochs=[int(e) for e in raw.get("epochs", [])],
                   num_models=int(raw.get("num_models", sum(map(len, splits.values())))),
                   twins=raw.get("twins") or None, imported=raw.get("import") or None, source=origin)

    @classmethod
    def read(cls, path: Path, config: str | None = None) -> ConfigInfo:
        """Read a zoo.json file; ``config``: the name it must describe."""
        try:
            raw = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RepositoryError(f"{path} is not valid JSON ({err}); rebuild the repository with `modelzoos "
                                  "build` or download it again") from err
        info = cls.from_json(raw, str(path))
        if config is not None and info.config != config:
            raise RepositoryError(f"{path} describes config {info.config!r}, not {config!r}")
        return info


def read_configs(repo: Path) -> dict[str, ConfigInfo]:
    """{config: its ConfigInfo} for every config folder of the repository folder ``repo``, in catalogue order."""
    data = Path(repo) / DATA_DIR
    configs = {}
    for cdir in sorted(data.iterdir()) if data.is_dir() else []:
        if not cdir.is_dir() or cdir.name.startswith("."):
            continue
        path = cdir / "zoo.json"
        if not path.is_file():
            if any(cdir.glob("*.parquet")):
                raise RepositoryError(f"{cdir} holds Parquet files but no zoo.json: rebuild that config with "
                                      "`modelzoos build` or delete the folder")
            continue
        configs[cdir.name] = ConfigInfo.read(path, cdir.name)
    return dict(sorted(configs.items(), key=lambda kv: table_order(kv[0])))


# ---------------------------------------------------------------------------------------------------------
# Local folder or Hub id
# ---------------------------------------------------------------------------------------------------------

_HUB_PREFIX = "hf://datasets/"


def local_root(repo: str | Path) -> Path | None:
    """The folder of a local repository, None for a Hub id (an existing folder wins, as in load_dataset)."""
    if isinstance(repo, Path) or Path(repo).is_dir():
        root = Path(repo)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset repository folder {root} does not exist")
        return root
    return None


def _fetch_zoo_json(repo: str | Path, config: str, revision: str | None) -> Path:
    filename = f"{DATA_DIR}/{config}/zoo.json"
    root = local_root(repo)
    if root is not None:
        path = root / filename
        if not path.is_file():
            found = sorted(p.parent.name for p in root.glob(f"{DATA_DIR}/*/zoo.json"))
            raise FileNotFoundError(f"{path} does not exist: {config!r} is not a config of {root} "
                                    f"(configs with a zoo.json: {', '.join(found) or 'none'})")
        return path
    import huggingface_hub
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = str(repo).removeprefix(_HUB_PREFIX)
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))
    except HFValidationError as err:
        raise FileNotFoundError(f"{repo!r} is neither an existing folder nor a Hub dataset id (ORG/NAME)") from err
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(f"{filename} of dataset {repo_id!r} is not in the local cache and the Hub cannot be "
                                "reached (offline, or HF_HUB_OFFLINE=1); connect once to cache it") from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"dataset repository {repo_id!r} not found on the Hub (nor a local folder of that "
                                "name); check the id, or log in with `hf auth login` for a private one") from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"revision {revision!r} of dataset {repo_id!r} not found on the Hub") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"{filename} not found in dataset {repo_id!r} (revision {revision or 'main'}): "
                                f"{config!r} is not a config of it, or it is not a modelzoos repository "
                                "(`datasets.get_dataset_config_names` lists its configs)") from err


def config_info(repo: str | Path, config: str, revision: str | None = None) -> ConfigInfo:
    """Read ``data/<config>/zoo.json`` of a local repository folder or of a Hub dataset ``ORG/NAME``.

    A local folder is used when ``repo`` is a ``Path`` or an existing directory (as ``load_dataset`` does);
    otherwise ``repo`` is a Hub id (``hf://datasets/`` prefix allowed) and the file is fetched through
    ``huggingface_hub.hf_hub_download`` (cached; works offline once cached).

    Raises:
        FileNotFoundError: the repository, revision or file does not exist (the message names it).
        RepositoryError (a ValueError): the file is not a valid zoo.json of format version 1 (names it).
    """
    return ConfigInfo.read(_fetch_zoo_json(repo, config, revision), config)


# ---------------------------------------------------------------------------------------------------------
# The card's YAML header
# ---------------------------------------------------------------------------------------------------------


def split_card(text: str) -> tuple[dict, str]:
    """(YAML header as a dict, body) of a README; ValueError when the header is missing or is not a mapping."""
    m = _FRONT_MATTER.match(text)
    if m is None:
        raise ValueError("no YAML header: the card must start with a '---' line and close it with another '---'")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"YAML header does not parse: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"YAML header is a {type(meta).__name__}, not a mapping")
    return meta, text[m.end():]


def join_card(meta: dict, body: str) -> str:
    """A README from its YAML header (keys in the given order) and its body: ``split_card``'s inverse."""
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return f"---\n{header}---\n{body}"


def data_files(config: str) -> list[dict[str, str]]:
    """The ``data_files`` of a config's entry in the card's ``configs:`` list."""
    return [{"split": s, "path": f"{DATA_DIR}/{config}/{s}-*.parquet"} for s in SPLITS]


CARD_KEYS = ("license", "pretty_name", "size_categories", "task_categories", "tags")  # required in the header


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def _card_configs(repo: Path, problems: list[str]) -> list[str]:
    """Config names listed by README.md (problems appended); [] when the card is unusable."""
    readme = repo / README
    if not readme.is_file():
        problems.append(f"{readme} is missing (run `modelzoos build`, which writes it)")
        return []
    try:
        meta, _ = split_card(readme.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        problems.append(f"{readme}: {err}")
        return []
    entries = meta.get("configs")
    if not isinstance(entries, list) or not entries:
        problems.append(f"{readme}: the YAML header has no `configs:` list")
        return []
    names, defaults = [], []
    for k, entry in enumerate(entries):
        name = entry.get("config_name") if isinstance(entry, dict) else None
        try:
            check_name(name, f"{readme} configs[{k}]")
        except SpecError as err:
            problems.append(str(err))
            continue
        if name in names:
            problems.append(f"{readme}: config {name!r} is listed twice")
            continue
        names.append(name)
        if entry.get("default") is True:
            defaults.append(name)
        if entry.get("data_files") != data_files(name):
            problems.append(f"{readme}: config {name!r} has data_files {entry.get('data_files')!r}, expected "
                            f"{data_files(name)!r}")
    if len(defaults) != 1:
        problems.append(f"{readme}: exactly one config must have `default: true`, found {len(defaults)}"
                        f"{' (' + ', '.join(defaults) + ')' if defaults else ''}")
    problems += [f"{readme}: the YAML header lacks `{key}`" for key in CARD_KEYS if key not in meta]
    return names


def _check_config(repo: Path, name: str, problems: list[str]) -> None:
    cdir = repo / DATA_DIR / name
    try:
        info = ConfigInfo.read(cdir / "zoo.json", name)
    except FileNotFoundError:
        problems.append(f"{cdir / 'zoo.json'} is missing")
        return
    except ValueError as err:
        problems.append(str(err))
        return
    seen: dict[int, str] = {}
    for split in SPLITS:
        for m in info.splits.get(split, []):
            if m in seen:
                problems.append(f"{info.source}: model {m} is in both {seen[m]} and {split}")
            seen[m] = split
    others = sorted(p.name for p in cdir.iterdir() if p.is_file() and p.name != "zoo.json"
                    and not p.name.startswith(".") and not SHARD.match(p.name))
    if others:
        problems.append(f"{cdir}: files that are not shards of this format: {others}")
    reference: tuple[Path, pa.Schema] | None = None
    expected = info.arrow_schema()
    floats = sum(info.vectors.values())
    for split in SPLITS:
        files = sorted(cdir.glob(f"{split}-*.parquet"))
        if not files:
            problems.append(f"{cdir}: no {split}-*.parquet file")
            continue
        counts = {int(m["n"]) for f in files if (m := SHARD.match(f.name))}
        if len(counts) == 1:
            n = next(iter(counts))
            if [f.name for f in files] != [shard_name(split, i, n) for i in range(n)]:
                problems.append(f"{cdir}: {split} shards {[f.name for f in files]} do not form a complete "
                                f"0..{n - 1} of-{n:05d} set")
        elif len(counts) > 1:
            problems.append(f"{cdir}: {split} shards of different builds mixed (of-counts {sorted(counts)})")
        rows, models = 0, set()
        for f in files:
            try:
                pf = pq.ParquetFile(f, page_checksum_verification=True)
                schema = pf.schema_arrow
                ids = np.concatenate([np.zeros(0, np.int64)] + [  # every page read: checksums verified
                    pf.read_row_group(g).column("model_id").to_numpy() for g in range(pf.metadata.num_row_groups)])
            except (pa.ArrowException, OSError, KeyError) as err:
                problems.append(f"{f}: not a readable Parquet file of this format, or a page fails its checksum "
                                f"({type(err).__name__}: {err}); rebuild the config with `modelzoos build`")
                continue
            if reference is None:
                reference = (f, schema)
                _check_schema(f, schema, info, expected, problems)
            elif not schema.equals(reference[1], check_metadata=True):
                problems.append(f"{f}: schema differs from {reference[0]}")
            if f.stat().st_size > MAX_FILE_BYTES:
                problems.append(f"{f}: {f.stat().st_size:,} bytes, more than the {MAX_FILE_BYTES:,} allowed")
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if n > 1 and n * floats * 4 > ROW_GROUP_BYTES:
                    problems.append(f"{f}: row group {g} holds {n * floats * 4:,} bytes of weights, more than "
                                    f"{ROW_GROUP_BYTES:,}")
            rows += len(ids)
            models.update(int(m) for m in np.unique(ids))
        if rows != info.num_rows.get(split):
            problems.append(f"{cdir}: {split} files hold {rows} rows, zoo.json says {info.num_rows.get(split)}")
        stray = sorted(models ^ set(info.splits.get(split, [])))
        if stray:
            problems.append(f"{cdir}: {split} files hold models {stray[:10]} that zoo.json puts elsewhere (or the "
                            "reverse)")


def _check_schema(path: Path, schema: pa.Schema, info: ConfigInfo, expected: pa.Schema, problems: list[str]) -> None:
    dim = info.layout.size
    weights = schema.field(WEIGHTS).type if WEIGHTS in schema.names else None
    if not (pa.types.is_fixed_size_list(weights) and weights.list_size == dim
            and weights.value_type == pa.float32()):
        problems.append(f"{path}: column weights is {weights}, zoo.json's layout needs fixed_size_list<float>[{dim}]")
    if schema.names != expected.names:
        problems.append(f"{path}: columns {schema.names}, expected {expected.names}")
    metadata = schema.metadata or {}
    try:
        feats = Features.from_arrow_schema(schema)
        if feats != info.features:
            problems.append(f"{path}: datasets features {feats} differ from the expected {info.features}")
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as err:
        problems.append(f"{path}: unreadable `huggingface` schema metadata ({err})")
    if b"huggingface" not in metadata:
        problems.append(f"{path}: no `huggingface` schema metadata")
    try:
        if json.loads(metadata.get(b"modelzoos", b"null")) != info.to_json():
            problems.append(f"{path}: its `modelzoos` schema metadata differs from zoo.json (mixed builds?)")
    except json.JSONDecodeError as err:
        problems.append(f"{path}: unreadable `modelzoos` schema metadata ({err})")


def validate_repo(repo: str | Path, config: str | None = None) -> list[str]:
    """Check a repository folder as ``modelzoos build`` writes it (every config, or only ``config``, which the
    card must list); return the card's config names, or raise RepositoryError listing every problem found,
    each naming its file. Reads only local files: every page of every shard (one row group in memory at a
    time), so a page whose bytes changed fails its checksum (build writes page checksums)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"{repo} is not a directory (expected a folder written by `modelzoos build`)")
    problems: list[str] = []
    names = _card_configs(repo, problems)
    data = repo / DATA_DIR
    present = {p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")} if data.is_dir() else set()
    for extra in sorted(present - set(names)):
        problems.append(f"{data / extra} is not listed in README.md's configs (rerun `modelzoos build` to "
                        "regenerate the card, or delete the folder)")
    if config is not None and names and config not in names:
        problems.append(f"config {config!r} is not in {repo / README}; available: {', '.join(names)}")
    for name in names:
        if config is None or name == config:
            _check_config(repo, name, problems)
    if problems:
        raise RepositoryError(f"{repo} is not a valid repository folder ({len(problems)} problem(s)):\n- "
                              + "\n- ".join(problems))
    return names
