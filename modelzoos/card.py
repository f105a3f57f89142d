"""The dataset card (README.md of a repository folder): rendering it from the configs present, and merging it
with the card already on the Hub.

``render(repo, repo_id)`` builds the card (a YAML header listing every config, a body with one section per
config) from the templates in ``modelzoos/cards/``: package data, read through ``importlib.resources``, so an
installed wheel has them (the source tree's top-level ``cards/`` is a link to that folder). ``write(repo)``
stores it; ``merge(local, remote, configs)`` is what
``modelzoos.hub`` publishes when it pushes some configs into a repository that may hold others. A config's
section of the body is wrapped in markers, which ``merge`` keeps or replaces as a whole::

    <!-- config:mnist_cnn_seed start -->
    ...
    <!-- config:mnist_cnn_seed end -->
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

import yaml

from modelzoos.files import write_text
from modelzoos.repository import (
    README,
    SPLITS,
    VALUE_TYPES,
    ConfigInfo,
    data_files,
    join_card,
    read_configs,
    split_card,
)

CARDS = files("modelzoos") / "cards"  # the card templates (package data)
CITATION = """@inproceedings{schurholt2022modelzoos,
  title     = {Model Zoos: A Dataset of Diverse Populations of Neural Network Models},
  author    = {Sch{\\"u}rholt, Konstantin and Taskiran, Diyar and Knyazev, Boris and Gir{\\'o}-i-Nieto, Xavier and Borth, Damian},
  booktitle = {Advances in Neural Information Processing Systems (Datasets and Benchmarks Track)},
  year      = {2022}
}"""  # noqa: E501
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
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
    "trial": "imported configs only: the model's trial folder in the original release",
}
# What the card says about each optimizer (optimizers.OPTIMIZERS) and twin method (twins.METHODS)
OPTIMIZER_TEXT = {
    "adam": "Adam (coupled L2 weight decay)",
    "sgd": "SGD with momentum 0.9 (coupled L2 weight decay; OneCycle cycles the momentum 0.95↔0.85)",
}
TWIN_TEXT = {
    "vd": "variational dropout (Molchanov et al. 2017, arXiv 1701.05369) as the original twins: per-weight "
          "log σ² initialised to −10, local reparameterisation, KL weight min(1, 0.01·e/25), weights with "
          "log α ≥ 3 zeroed",
    "mp": "gradual global magnitude pruning (Zhu & Gupta 2017, arXiv 1710.01878) to 80 % of the conv + linear "
          "weights on a cubic schedule over 20 epochs, then 5 epochs of fine-tuning; our settings (the original "
          "published none)",
}
SCHEDULES = {"constant": "constant learning rate",
             "onecycle": "OneCycle, stepped per batch (the `lr` column is its peak `max_lr`)"}
_SECTION = re.compile(r"<!-- config:([a-z0-9][a-z0-9_]*) start -->.*?<!-- config:\1 end -->", re.S)


def _template(name: str) -> string.Template:
    path = CARDS / name
    if not path.is_file():
        raise FileNotFoundError(f"card template {path} is missing from the modelzoos package: reinstall modelzoos")
    return string.Template(path.read_text(encoding="utf-8"))


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a number of rows."""
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>1B"


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (lines joined by newlines); cells are written as given (escape ``|`` in them first)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _md_table(head: list[str], rows: list[list]) -> str:
    """``markdown_table`` of any values, ``|`` escaped (the card's cells hold user text)."""
    return markdown_table(head, [[str(c).replace("|", "\\|") for c in row] for row in rows])


def _fmt(values) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _seeds_rule(seeds: dict, imported: bool) -> str:
    if imported and "random" in seeds:
        return (f"{seeds['random']} models per grid point, each with the seed its original trial drew (column `seed`); "
                "a grid point's models hold its trials in ascending order of seed")
    if "range" in seeds:
        a, b = seeds["range"]
        return (f"seeds {a}…{b}: every grid point is trained once per seed ({b - a + 1:,} replicates); all "
                "training randomness of a model derives from its seed (column `seed`)")
    return (f"{seeds['random']} models per grid point, each with its own seed drawn with "
            f"`numpy.random.default_rng({seeds['draw_seed']}).integers({seeds['low']}, {seeds['high']}, "
            "size=models)`")


def _twins_section(twins: dict | None) -> str:
    if not twins:
        return ""
    src = twins["source_run"]["zoo"]["name"]
    return (f"**Sparsified twins** of `{src}`: every model's state after epoch {twins['source_epoch']} trained "
            f"for 25 more epochs with {TWIN_TEXT[twins['method']]}. Epoch 0 is the dense source model (its "
            "accuracy equals the source's final one), epochs 1–25 the sparse model after each epoch; column "
            "`sparsity` per row. Settings (also under `twins` in `zoo.json`): "
            f"`{json.dumps(twins['settings'], ensure_ascii=False)}`.\n")


def _imported_section(imported: dict | None) -> str:
    if not imported:
        return ""
    release = imported["release"]
    record = f" ({release['record']})" if release.get("record") else ""
    files = ", ".join(f"`{s['name']}`" for s in imported["sources"])
    models, states = imported["models"], imported["states"]
    lacking = []
    if models["missing"]:
        lacking.append(f"{len(models['missing']):,} of the spec's {models['spec']:,} models")
    if states["missing"]:
        lacking.append(f"{len(states['missing']):,} states of the models it holds")
    layouts = "; ".join(f"`{k}`: " + ", ".join(f"{n:,} × {d}" for d, n in v.items())
                        for k, v in imported["index_layouts"].items())
    return (f"**The authors' released models**: converted bit-exact by `modelzoos import` from the original release"
            f"{record}, files {files} (sizes and SHA-256 under `import` in `zoo.json`), license "
            f"{release['license']}. Cite the paper ({release['citation']}; BibTeX below). The release lacks "
            f"{' and '.join(lacking) if lacking else 'nothing of this config'}; the column `trial` names each model's "
            f"original trial folder; epoch-0 train metrics are NaN where the release logged the -999 placeholder. "
            f"Checkpoint module indices found: {layouts or 'none'}.\n")


def _stored(epochs: list[int]) -> str:
    """``epochs 0–50``, ``epoch 50 only`` or ``epochs 0, 25, 50``."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]} only"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"epochs {epochs[0]}–{epochs[-1]}"
    return "epochs " + ", ".join(map(str, epochs))


def _config_section(cfg: ConfigInfo, repo_id: str) -> str:
    zoo, name = cfg.zoo, cfg.config
    dim = cfg.layout.size
    per_split = [[s, f"{len(cfg.splits[s]):,}", f"{cfg.num_rows[s]:,}"] for s in SPLITS]
    epochs = cfg.epochs
    models, states = cfg.num_models, sum(cfg.num_rows.values())
    subset = []
    if models < zoo.num_models:
        which = "" if cfg.imported else "the first "
        subset.append(f"{which}{models:,} of the zoo's {zoo.num_models:,} models")
    stored = _stored(epochs)
    if epochs != list(range(zoo.epochs + 1)):
        first = stored if len(epochs) > 1 else f"only epoch {epochs[0]}"
        subset.append(f"{first} of the protocol's {zoo.epochs}")
    coverage = ("This config holds " + " and ".join(subset) + ".") if subset else "This config holds the whole zoo."
    recipe = cfg.data["recipe"]
    sizes = cfg.data.get("sizes")  # None for imports: the models were trained on the original's own data
    data_recipe = (f"`{recipe['dataset']}` at {recipe['size']}×{recipe['size']} ({recipe['geometry']}), "
                   f"{'grayscale, ' if recipe.get('grayscale') else ''}normalised with mean {recipe['mean']} / "
                   f"std {recipe['std']}, augmentation `{recipe.get('augment', 'none')}`"
                   f"{' (also on validation)' if recipe.get('augment_val') else ''}; images train / val / test "
                   f"{' / '.join(f'{sizes[k]:,}' for k in ('train', 'val', 'test')) if sizes else 'not recorded'} "
                   f"(split seed {recipe.get('split_seed', '?')}); {cfg.data.get('num_classes', '?')} classes")
    columns = [[f"`{f.name}`", VALUE_TYPES[f.type], COLUMN_DOCS[f.name]] for f in cfg.scalar_columns]
    columns.append(["`weights`", f"fixed_size_list<float32>[{dim}]",
                    f"the flat state, `List(Value(\"float32\"), length={dim})`; layout below"
                    + ("; sparse: masked weights are exactly 0" if cfg.twins else "")])
    for column, n in list(cfg.vectors.items())[1:]:  # variational twins: log_sigma2
        columns.append([f"`{column}`", f"fixed_size_list<float32>[{n}]",
                        "variational dropout's log σ² of every conv weight, conv bias and linear weight "
                        "(layout `twins.log_sigma2_layout` of zoo.json); log α = log σ² − 2·log(|w| + 1e-15)"])
    layout_rows = [[f"`{e.name}`", "×".join(map(str, e.shape)) or "scalar", str(e.offset), e.kind]
                   for e in cfg.layout.entries]
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
        parameters=f"{cfg.layout.num_parameters:,}",
        dim=f"{dim:,}",
        dim_raw=str(dim),
        input="×".join(map(str, (zoo.in_channels, zoo.data.size, zoo.data.size))),
        classes=str(zoo.num_classes),
        grid_table=_md_table(["axis", "values"], [[a, _fmt(v)] for a, v in zoo.grid.items()]),
        seeds=_seeds_rule(zoo.seeds, cfg.imported is not None),
        optimizer="; ".join(OPTIMIZER_TEXT[o] for o in zoo.grid["optimizer"]),
        batch_size=str(zoo.batch_size),
        epochs_protocol=str(zoo.epochs),
        schedule=SCHEDULES.get(zoo.schedule, zoo.schedule),
        data_recipe=data_recipe,
        notes="\n".join(f"- {n}" for n in zoo.notes) or "- none",
        columns_table=_md_table(["column", "Arrow type", "meaning"], columns),
        layout_table=_md_table(["tensor", "shape", "offset", "kind"], layout_rows),
        repo_id=repo_id,
        last_epoch=str(epochs[-1]),
        twins=_twins_section(cfg.twins) + _imported_section(cfg.imported),
    )


def render(repo: Path, repo_id: str | None = None) -> str:
    """The card of the repository folder ``repo`` from every config present (data/<config>/zoo.json), the
    first config (catalogue order) the default; ``repo_id`` (``org/name``) goes into the usage snippets
    (without it they show ``ORG/NAME``)."""
    repo = Path(repo)
    configs = read_configs(repo)
    if not configs:
        raise ValueError(f"{repo} holds no config (no data/<config>/zoo.json); build one with `modelzoos build`")
    repo_id = repo_id or "ORG/NAME"
    entries = [{"config_name": name, **({"default": True} if i == 0 else {}), "data_files": data_files(name)}
               for i, name in enumerate(configs)]
    total_rows = sum(sum(c.num_rows.values()) for c in configs.values())
    header = _template("README.header.yaml.tmpl").substitute(
        size_category=size_category(total_rows),
        configs=yaml.safe_dump({"configs": entries}, sort_keys=False, allow_unicode=True),
    )
    overview = [[f"[`{name}`](#{name})", cfg.zoo.architecture, f"{cfg.num_models:,}",
                 f"{sum(cfg.num_rows.values()):,}", f"{cfg.layout.size:,}"] for name, cfg in configs.items()]
    first = next(iter(configs))
    body = _template("body.md.tmpl").substitute(
        num_configs=str(len(configs)),
        total_rows=f"{total_rows:,}",
        overview_table=_md_table(["config", "architecture", "models", "states (rows)", "D"], overview),
        default_config=first,
        default_last_epoch=str(configs[first].epochs[-1]),
        repo_id=repo_id,
        config_sections="\n".join(_config_section(c, repo_id) for c in configs.values()),
        citation=CITATION,
    )
    text = header + "\n" + body
    meta, _ = split_card(text)
    if [c["config_name"] for c in meta["configs"]] != list(configs):  # the template must keep the YAML intact
        raise RuntimeError(f"the card templates in {CARDS} produced a YAML header that does not list the configs")
    return text


def write(repo: Path, repo_id: str | None = None) -> str:
    """Render the card of ``repo`` (``render``) into ``repo``/README.md; returns its text."""
    text = render(repo, repo_id)
    write_text(Path(repo) / README, text)
    return text


# ---------------------------------------------------------------------------------------------------------
# Merging with the card on the Hub
# ---------------------------------------------------------------------------------------------------------


def merge(local: str, remote: str | None, configs: Iterable[str] | None = None) -> str:
    """The card to publish when pushing ``configs`` (None: all local ones) of the ``local`` card over ``remote``.

    The local card is the base (its top-level keys win; remote-only keys are kept). ``configs:`` (and a list-form
    ``dataset_info:``) keep the remote order: pushed configs replace their remote entry in place, new ones are
    appended, remote-only ones are kept. Exactly one entry has ``default: true``: the remote default if any, else
    the local default if it is pushed, else the first. Body sections follow the same rule; they take the place
    of the local body's sections, or are appended when the local body has none.
    """
    local_meta, local_body = split_card(local)
    local_entries = _named(local_meta.get("configs"))
    wanted = None if configs is None else set(configs)
    pushed = [e["config_name"] for e in local_entries if wanted is None or e["config_name"] in wanted]
    if remote is None and len(pushed) == len(local_entries):
        return local
    remote_meta, remote_body = split_card(remote) if remote is not None else ({}, "")
    remote_entries = _named(remote_meta.get("configs"))

    entries = _merge_named(remote_entries, local_entries, pushed)
    default = next((e["config_name"] for e in remote_entries if e.get("default") is True), None)
    if default is None:
        default = next((n for n in pushed if any(e.get("default") is True and e["config_name"] == n
                                                 for e in local_entries)), entries[0]["config_name"])
    entries = [_with_default(e, e["config_name"] == default) for e in entries]

    meta = dict(local_meta)
    meta["configs"] = entries
    if isinstance(local_meta.get("dataset_info"), list) or isinstance(remote_meta.get("dataset_info"), list):
        info = _merge_named(_named(remote_meta.get("dataset_info")), _named(local_meta.get("dataset_info")), pushed)
        meta["dataset_info"] = info
    meta.update({k: v for k, v in remote_meta.items() if k not in meta})

    spans = list(_SECTION.finditer(local_body))
    local_sections = {m.group(1): m.group(0) for m in spans}
    remote_sections = {m.group(1): m.group(0) for m in _SECTION.finditer(remote_body)}
    blocks = [(local_sections if e["config_name"] in pushed else remote_sections).get(e["config_name"])
              for e in entries]
    blocks = [b for b in blocks if b is not None]
    if spans:  # the sections in the local body's place, separated as the local body separates them
        sep = local_body[spans[0].end():spans[1].start()] if len(spans) > 1 else "\n\n"
        body = local_body[:spans[0].start()] + sep.join(blocks) + local_body[spans[-1].end():]
    else:
        body = local_body.rstrip("\n") + ("\n\n" + "\n\n".join(blocks) if blocks else "") + "\n"
    if meta == local_meta and body == local_body:
        return local
    return join_card(meta, body)


def _named(value) -> list[dict]:
    return [e for e in value if isinstance(e, dict) and "config_name" in e] if isinstance(value, list) else []


def _merge_named(remote: list[dict], local: list[dict], pushed: list[str]) -> list[dict]:
    mine = {e["config_name"]: e for e in local if e["config_name"] in pushed}
    merged = [mine.get(e["config_name"], e) for e in remote]
    seen = {e["config_name"] for e in merged}
    return merged + [e for n, e in mine.items() if n not in seen]


def _with_default(entry: dict, default: bool) -> dict:
    entry = {k: v for k, v in entry.items() if k != "default"}
    if default:  # after config_name, like the Hub's own cards
        entry = {"config_name": entry["config_name"], "default": True,
                 **{k: v for k, v in entry.items() if k != "config_name"}}
    return entry


def config_names(card: str) -> list[str]:
    """The config names a card's YAML header lists, in order."""
    return [e["config_name"] for e in _named(split_card(card)[0].get("configs"))]
