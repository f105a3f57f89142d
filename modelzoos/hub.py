"""Publishing a repository folder built by ``modelzoos build`` to the Hugging Face Hub (docs/hub_format.md).

``push(repo_dir, "org/name")`` uploads every config of the folder; ``push(..., config="x")`` adds or replaces only
``data/x/**``. Other configs on the Hub are never touched, and the dataset card is merged, not overwritten: remote
``configs:`` entries and body sections of configs that are not pushed are kept, pushed ones are replaced or added,
and exactly one config stays ``default: true`` (the remote default if there is one). Body sections belong to a
config when they are wrapped in ``config_section`` markers::

    <!-- config:mnist_cnn_seed start -->
    ...
    <!-- config:mnist_cnn_seed end -->

Guarantees:

- The folder is validated before any network call (``validate_folder``); a bad folder raises ValueError.
- Nothing half-done: all large files are uploaded (LFS/Xet) before the first commit, and the card and the
  deletion of stale shards go in the last commit. Up to ``MAX_OPERATIONS_PER_COMMIT`` changes form one atomic
  commit; larger pushes add the data in several commits first, so an interrupted push leaves the old card, which
  only names files that exist.
- Resumable and idempotent: files already on the Hub with the same content are skipped (compared by size, then
  sha256 or git blob id), uploaded blobs are not sent twice, so re-running the same command finishes the job.
- The token comes from huggingface_hub's usual resolution (``HF_TOKEN``, then the ``hf auth login`` token file)
  unless ``token=`` is given; it is never printed, logged or put in an error message.
- Network trouble (``HF_HUB_OFFLINE=1``, unreachable Hub, HTTP errors) raises ``HubError``; 401/403 raise
  ``HubAuthError`` with the fix (``hf auth login`` or ``HF_TOKEN``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import yaml

log = logging.getLogger(__name__)

README = "README.md"
DATA_DIR = "data"
CONFIG_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
MAX_OPERATIONS_PER_COMMIT = 50  # what datasets' push_to_hub uses; the Hub recommends < ~100 files per commit
_SECTION = re.compile(r"<!-- config:([a-z0-9][a-z0-9_]*) start -->.*?<!-- config:\1 end -->", re.S)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_TRUE = {"1", "true", "yes", "on"}


class HubError(RuntimeError):
    """Publishing failed on the Hub side: offline, unreachable, refused, or changed concurrently."""


class HubAuthError(HubError):
    """The Hub refused the token (HTTP 401/403) or no token was found."""


# ---------------------------------------------------------------- the dataset card
def config_section(name: str, text: str) -> str:
    """Wrap a config's part of the card body in the markers that ``merge_card`` keeps or replaces as a whole."""
    return f"<!-- config:{name} start -->\n{text.strip()}\n<!-- config:{name} end -->"


def split_card(text: str) -> tuple[dict, str]:
    """(YAML header as a dict, body) of a README; ValueError when the header is missing or is not a YAML mapping."""
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
    """A README from its YAML header (keys in the given order) and its body."""
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return f"---\n{header}---\n{body.lstrip(chr(10))}"


def merge_card(local: str, remote: str | None, configs: Iterable[str] | None = None) -> str:
    """The card to publish when pushing ``configs`` (None: all local ones) of the ``local`` card over ``remote``.

    The local card is the base (its top-level keys win; remote-only keys are kept). ``configs:`` (and a list-form
    ``dataset_info:``) keep the remote order: pushed configs replace their remote entry in place, new ones are
    appended, remote-only ones are kept. Exactly one entry has ``default: true``: the remote default if any, else
    the local default if it is pushed, else the first. Body sections (``config_section``) follow the same rule;
    they take the place of the local body's sections, or are appended when the local body has none.
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
    if spans:
        body = local_body[:spans[0].start()] + "\n\n".join(blocks) + local_body[spans[-1].end():]
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


# ---------------------------------------------------------------- the local folder
def validate_folder(repo_dir: str | Path, config: str | None = None) -> list[str]:
    """Problems that stop ``repo_dir`` from being published (empty list: publishable). Reads only local files.

    Checks: README.md has a YAML header listing ``configs:`` with valid, unique names and exactly one
    ``default: true``; every folder in data/ is a listed config; ``config``, if given, is listed. Every listed
    config (only ``config``, if given) has data/<config>/zoo.json (a JSON object naming the config) and, per
    split of its ``data_files``, at least one matching Parquet file inside data/<config>/, and every Parquet
    file there has a readable footer.
    """
    root = Path(repo_dir)
    if not root.is_dir():
        return [f"{root} is not a directory (expected a folder written by `modelzoos build`)"]
    readme = root / README
    if not readme.is_file():
        return [f"{readme} is missing (the dataset card with the `configs:` list)"]
    try:
        meta, _ = split_card(readme.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return [f"{readme}: {err}"]
    entries = meta.get("configs")
    if not isinstance(entries, list) or not entries:
        return [f"{readme}: the YAML header has no `configs:` list"]

    problems: list[str] = []
    names: list[str] = []
    for i, entry in enumerate(entries):
        name = entry.get("config_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not CONFIG_NAME.fullmatch(name):
            problems.append(f"{readme}: configs[{i}] has config_name {name!r}; names must match {CONFIG_NAME.pattern}")
            continue
        if name in names:
            problems.append(f"{readme}: config {name!r} is listed twice")
            continue
        names.append(name)
        if config is None or name == config:
            problems += _check_config(root, name, entry)
    defaults = [e.get("config_name") for e in entries if isinstance(e, dict) and e.get("default") is True]
    if len(defaults) != 1:
        problems.append(f"{readme}: exactly one config must have `default: true`, found {len(defaults)}"
                        + (f" ({', '.join(map(str, defaults))})" if defaults else ""))
    data = root / DATA_DIR
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")) if data.is_dir() else []
    for folder in folders:
        if folder.name not in names:
            problems.append(f"{folder} is not a config listed in {readme}; list it or remove the folder")
    if config is not None and config not in names:
        problems.append(f"config {config!r} is not in {readme}; available: {', '.join(names)}")
    return problems


def _check_config(root: Path, name: str, entry: dict) -> list[str]:
    problems = []
    folder = root / DATA_DIR / name
    zoo_json = folder / "zoo.json"
    try:
        spec = json.loads(zoo_json.read_text(encoding="utf-8"))
        if not isinstance(spec, dict):
            problems.append(f"{zoo_json}: expected a JSON object, found {type(spec).__name__}")
        elif spec.get("config", name) != name:
            problems.append(f"{zoo_json}: names config {spec['config']!r}, but sits in the folder of {name!r}")
    except FileNotFoundError:
        problems.append(f"{zoo_json} is missing")
    except (ValueError, UnicodeDecodeError) as err:
        problems.append(f"{zoo_json} is not valid JSON: {err}")

    files = entry.get("data_files")
    if isinstance(files, str):
        files = [{"split": "train", "path": files}]
    if not isinstance(files, list) or not files:
        return [*problems, f"config {name!r}: `data_files` must list {{split, path}} entries"]
    for item in files:
        split, patterns = (item.get("split"), item.get("path")) if isinstance(item, dict) else (None, None)
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(split, str) or not isinstance(patterns, list) or not patterns:
            problems.append(f"config {name!r}: data_files entry {item!r} needs a `split` and a `path`")
            continue
        matches = []
        for pattern in patterns:
            if not str(pattern).startswith(f"{DATA_DIR}/{name}/"):
                problems.append(f"config {name!r}, split {split!r}: path {pattern!r} is outside {DATA_DIR}/{name}/")
                continue
            matches += [p for p in root.glob(pattern) if p.is_file()]
        parquet = [p for p in matches if p.suffix == ".parquet"]
        if not parquet:
            problems.append(f"config {name!r}, split {split!r}: no Parquet file matches {patterns}")
        elif len(parquet) < len(matches):
            problems.append(f"config {name!r}, split {split!r}: {patterns} also matches non-Parquet files")
    for path in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        try:
            pq.read_metadata(path)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged footer
            problems.append(f"{path}: unreadable Parquet footer ({type(err).__name__}: {err})")
    return problems


def _publish_problems(repo_dir: Path) -> list[str]:
    """The problems ``modelzoos.publish.validate_repo`` reports (it raises ValueError listing them; its return
    value is ignored) when that module provides the function; nothing otherwise."""
    try:
        publish = importlib.import_module("modelzoos.publish")
    except ModuleNotFoundError as err:
        if err.name == "modelzoos.publish":
            return []
        raise
    validate = getattr(publish, "validate_repo", None)
    if validate is None:
        return []
    try:
        validate(repo_dir)
    except ValueError as err:
        return [str(err)]
    return []


def _local_files(root: Path, configs: list[str] | None) -> dict[str, Path]:
    """{path in repo: file} to publish, README excluded: data/<config>/** of ``configs``, or (None) every
    non-hidden file of the folder."""
    tops = [root] if configs is None else [root / DATA_DIR / c for c in configs]
    out = {}
    for top in tops:
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel != README and not any(part.startswith(".") for part in rel.split("/")):
                out[rel] = path
    return out


# ---------------------------------------------------------------- pushing
@dataclass(frozen=True)
class PushResult:
    """What a push did. ``commit_url`` is the last commit of the push (the existing head when nothing changed)."""

    repo_id: str
    commit_url: str
    configs: tuple[str, ...]
    card_configs: tuple[str, ...]
    default: str
    uploaded: tuple[str, ...]
    unchanged: tuple[str, ...]
    deleted: tuple[str, ...]
    card_updated: bool
    commits: int


def push(repo_dir: str | Path, repo_id: str, config: str | None = None, private: bool = False,
         token: str | None = None, revision: str = "main") -> str:
    """Publish a ``modelzoos build`` folder as the dataset ``repo_id``; returns the URL of the last commit.

    ``config=None`` pushes every config of the folder, ``config="x"`` only data/x/** (stale remote files of a
    pushed config are deleted, other configs are untouched); the card is merged (see ``merge_card``). The
    dataset repo is created (``private``) if missing; ``revision`` is a branch, created from main if missing.
    Raises ValueError for a folder failing ``validate_folder`` (before any network call), HubAuthError for a
    refused or missing token, HubError for offline mode, an unreachable Hub or other HTTP errors. Re-run after
    an interruption: already uploaded files are skipped.
    """
    return push_folder(repo_dir, repo_id, config=config, private=private, token=token, revision=revision).commit_url


def push_folder(repo_dir: str | Path, repo_id: str, config: str | None = None, private: bool = False,
                token: str | None = None, revision: str = "main") -> PushResult:
    """``push`` returning a ``PushResult`` (what was uploaded, skipped and deleted)."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.hf_api import RepoFile

    root = Path(repo_dir)
    problems = validate_folder(root, config) + _publish_problems(root)
    if problems:
        raise ValueError(f"{root} cannot be published ({len(problems)} problem(s)); nothing was uploaded:\n  - "
                         + "\n  - ".join(problems))
    if constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        raise HubError(f"cannot publish {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE "
                       "and re-run; nothing was uploaded.")
    secret = token or get_token()
    if not secret:
        raise HubAuthError(f"no Hugging Face token found to publish {repo_id}: run `hf auth login` or set HF_TOKEN "
                           "to a token with write access; nothing was uploaded.")

    local_card = (root / README).read_text(encoding="utf-8")
    local_configs = [e["config_name"] for e in _named(split_card(local_card)[0]["configs"])]
    configs = local_configs if config is None else [config]
    files = _local_files(root, None if config is None else configs)
    api = HfApi(token=token)

    with _hub_errors(repo_id, api.endpoint, secret):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
        tree = api.list_repo_tree(repo_id, recursive=True, repo_type="dataset", revision=head)
        remote = {f.path: f for f in tree if isinstance(f, RepoFile)}
        remote_card = None
        if README in remote:
            card_path = api.hf_hub_download(repo_id, README, repo_type="dataset", revision=head)
            remote_card = Path(card_path).read_text(encoding="utf-8")
        try:
            card = merge_card(local_card, remote_card, configs)
        except ValueError as err:
            raise HubError(f"the card README.md of {repo_id} on the Hub cannot be merged: {err}. Fix it on the "
                           "Hub (or delete it) and re-run.") from None

        changed = [p for p in files if not _same(files[p], remote.get(p))]
        unchanged = [p for p in files if p not in changed]
        stale = sorted(p for p in remote if p not in files
                       and any(p.startswith(f"{DATA_DIR}/{c}/") for c in configs))
        card_op = None if card == remote_card else card.encode("utf-8")
        commits, url = _commit(api, repo_id, revision, head, root, changed, stale, card_op, configs)
    card_entries = split_card(card)[0]["configs"]
    default = next(e["config_name"] for e in card_entries if e.get("default") is True)
    log.info("pushed %s to %s: %d file(s) uploaded, %d unchanged, %d deleted, %d commit(s)", ", ".join(configs),
             repo_id, len(changed), len(unchanged), len(stale), commits)
    return PushResult(repo_id, url, tuple(configs), tuple(e["config_name"] for e in card_entries), default,
                      tuple(changed), tuple(unchanged), tuple(stale), card_op is not None, commits)


def _same(path: Path, remote) -> bool:
    """True when the remote file (a RepoFile or None) has the content of ``path``: size, then sha256 (LFS) or
    the git blob id (regular files)."""
    if remote is None or remote.size != path.stat().st_size:
        return False
    if remote.lfs is not None:
        return _digest(path, hashlib.sha256()) == remote.lfs.sha256
    git = hashlib.sha1(b"blob %d\0" % remote.size)
    return _digest(path, git) == remote.blob_id


def _digest(path: Path, h) -> str:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _commit(api, repo_id: str, revision: str, head: str | None, root: Path, changed: list[str], stale: list[str],
            card: bytes | None, configs: list[str]) -> tuple[int, str]:
    """Upload and commit; returns (number of commits, URL of the last one). Blobs first, card last."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard

    if card is not None:  # the Hub checks the card's metadata at commit time: check it before any upload
        try:
            DatasetCard(card.decode("utf-8")).validate(repo_type="dataset")
        except ValueError as err:
            raise ValueError(f"the Hub rejects the dataset card README.md to publish to {repo_id}: {err}; "
                             "nothing was uploaded") from None
    adds = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(root / p)) for p in changed]
    final = [CommitOperationDelete(path_in_repo=p) for p in stale]
    if card is not None:
        final.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=card))
    prefix = f"{api.endpoint}/datasets/{repo_id}"
    if not adds and not final:
        log.info("%s is up to date at %s", repo_id, head)
        return 0, f"{prefix}/commit/{head}"
    if adds:
        log.info("uploading %d file(s) to %s", len(adds), repo_id)
        api.preupload_lfs_files(repo_id, additions=adds, repo_type="dataset", revision=revision, free_memory=False)
    what = ", ".join(configs) if len(configs) <= 3 else f"{len(configs)} configs"
    if len(adds) + len(final) <= MAX_OPERATIONS_PER_COMMIT:
        batches = [adds + final]
    else:
        batches = [adds[i:i + MAX_OPERATIONS_PER_COMMIT] for i in range(0, len(adds), MAX_OPERATIONS_PER_COMMIT)]
        batches += [final] if final else []
    parent, url = head, None
    for i, ops in enumerate(batches, 1):
        part = f" (part {i}/{len(batches)})" if len(batches) > 1 else ""
        info = api.create_commit(repo_id, operations=ops, commit_message=f"Upload {what} with modelzoos{part}",
                                 repo_type="dataset", revision=revision, parent_commit=parent)
        parent, url = info.oid, info.commit_url
    return len(batches), url


@contextmanager
def _hub_errors(repo_id: str, endpoint: str, secret: str | None) -> Iterator[None]:
    """Turn huggingface_hub / httpx2 failures into HubError with the fix; the token is scrubbed from messages."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        yield
    except (HubError, ValueError):
        raise
    except Exception as err:
        resume = "Re-run the same command to resume: files already on the Hub are skipped."
        if _find_cause(err, OfflineModeIsEnabled):
            message, kind = (f"cannot publish {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). Unset "
                             f"HF_HUB_OFFLINE and re-run.", HubError)
        elif (http := _find_cause(err, HfHubHTTPError)) is not None and http.response is not None:
            status = http.response.status_code
            detail = http.server_message or str(http).strip().splitlines()[0]
            if status in (401, 403):
                message, kind = (f"not authorised to write the dataset {repo_id} on {endpoint} (HTTP {status}: "
                                 f"{detail}). Run `hf auth login` or set HF_TOKEN to a token with write access "
                                 f"to '{repo_id.split('/')[0]}'.", HubAuthError)
            elif status in (409, 412):
                message, kind = (f"the dataset {repo_id} changed on the Hub during the push (HTTP {status}: "
                                 f"{detail}). Re-run to merge with its new state.", HubError)
            else:
                message, kind = f"the Hub refused the push to {repo_id} (HTTP {status}: {detail}). {resume}", HubError
        elif (down := _find_cause(err, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError))) is not None:
            message, kind = (f"cannot reach the Hub at {endpoint} ({type(down).__name__}: {down}). Check the "
                             f"network (and HF_ENDPOINT). {resume}", HubError)
        else:
            raise
        if secret:
            message = message.replace(secret, "***")
        raise kind(message) from err


def _find_cause(err: BaseException | None, types) -> BaseException | None:
    """The first exception of ``types`` in the chain of causes and contexts of ``err``."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, types):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


# ---------------------------------------------------------------- command line
def cli_push(args: argparse.Namespace) -> int:
    """``modelzoos push REPO_DIR --repo-id ORG/NAME [--config CFG] [--private]``. A folder failing validation
    raises ValueError (the CLI's usage errors); Hub failures print the reason and return 1."""
    try:
        result = push_folder(Path(args.repo_dir), args.repo_id, config=args.config, private=args.private,
                             revision=getattr(args, "revision", None) or "main")
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    root = Path(args.repo_dir)
    print(f"pushed {len(result.configs)} config(s) to {result.repo_id} in {result.commits} commit(s): "
          f"{result.commit_url}")
    for name in result.configs:
        mine = [p for p in result.uploaded if p.startswith(f"{DATA_DIR}/{name}/")]
        same = [p for p in result.unchanged if p.startswith(f"{DATA_DIR}/{name}/")]
        gone = [p for p in result.deleted if p.startswith(f"{DATA_DIR}/{name}/")]
        size = sum((root / p).stat().st_size for p in mine)
        print(f"  {name}: {len(mine)} file(s) uploaded ({_size(size)}), {len(same)} unchanged, "
              f"{len(gone)} stale deleted")
    others = [p for p in result.uploaded if not p.startswith(f"{DATA_DIR}/")]
    if others:
        print(f"  other files: {', '.join(others)}")
    print(f"  {README}: {'updated' if result.card_updated else 'unchanged'}; the card lists "
          f"{len(result.card_configs)} config(s), default {result.default}")
    print("load with:")
    print("  from datasets import load_dataset")
    for name in result.configs:
        print(f'  load_dataset("{result.repo_id}", "{name}")')
    return 0


def _size(n: int) -> str:
    k = min(3, (len(str(n)) - 1) // 3)
    return f"{n / 1000 ** k:.1f} {('B', 'kB', 'MB', 'GB')[k]}"
