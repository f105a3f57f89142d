"""Publishing a repository folder built by ``modelzoos build`` to the Hugging Face Hub (docs/hub_format.md).

``push(repo_dir, "org/name")`` uploads every config of the folder; ``push(..., config="x")`` adds or replaces only
``data/x/**``. Other configs on the Hub are never touched, and the dataset card is merged, not overwritten
(``card.merge``): remote ``configs:`` entries and body sections of configs that are not pushed are kept,
pushed ones are replaced or added, and exactly one config stays ``default: true`` (the remote default if there
is one). The card published is rendered for ``repo_id`` from the folder's configs (``card.render``); the
folder's own README.md is not changed.

Guarantees:

- The folder is validated before any network call (``repository.validate_repo``); a bad folder raises
  RepositoryError (a ValueError).
- Nothing half-done: all large files are uploaded (LFS/Xet) before the first commit, and the card and the
  deletion of stale shards go in the last commit. Up to ``MAX_OPERATIONS_PER_COMMIT`` changes form one atomic
  commit; larger pushes add the data in several commits first, so an interrupted push leaves the old card, which
  only names files that exist.
- Resumable and idempotent: files already on the Hub with the same content are skipped (compared by size, then
  sha256 or git blob id), uploaded blobs are not sent twice, so re-running the same command finishes the job.
- Only what ``modelzoos build`` wrote is published: the files its manifest.json lists (checked against it,
  the cheap way, before any network call); other files of the folder are skipped and listed
  (``PushResult.skipped``).
- Never hangs: every request has a timeout (``timeout``, seconds without an answer); requests that time out,
  fail to connect or get HTTP 408/429/5xx are retried with exponential backoff (``retries``), each wait logged
  as a warning that says what the push is waiting for.
- The token comes from huggingface_hub's usual resolution (``HF_TOKEN``, then the ``hf auth login`` token file)
  unless ``token=`` is given; it is never printed, logged or put in an error message.
- Network trouble (``HF_HUB_OFFLINE=1``, unreachable Hub, HTTP errors) raises ``HubError``; 401/403 raise
  ``HubAuthError`` with the fix (``hf auth login`` or ``HF_TOKEN``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from modelzoos import card, manifest
from modelzoos.files import lock
from modelzoos.repository import DATA_DIR, README, RepositoryError, split_card, validate_repo

log = logging.getLogger(__name__)

MAX_OPERATIONS_PER_COMMIT = 50  # what datasets' push_to_hub uses; the Hub recommends < ~100 files per commit
TIMEOUT_S = 120.0  # seconds without an answer (connecting, or between bytes) before a request is given up
RETRIES = 4  # retries of a request that timed out, could not connect or got HTTP 408/429/5xx
BACKOFF_S, MAX_BACKOFF_S = 2.0, 60.0  # the first wait between attempts, doubled each time up to the maximum
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_TRUE = {"1", "true", "yes", "on"}
T = TypeVar("T")


class HubError(RuntimeError):
    """Publishing failed on the Hub side: offline, unreachable, refused, or changed concurrently."""


class HubAuthError(HubError):
    """The Hub refused the token (HTTP 401/403) or no token was found."""


def _local_files(root: Path, configs: list[str]) -> tuple[dict[str, Path], list[str]]:
    """({path in repo: file} to publish for ``configs``: the data/<config>/ files that build's manifest.json
    lists, and the files of the folder that the manifest does not list, which are skipped). RepositoryError when
    there is no manifest or a listed file differs from it (sizes, footers, headers). The card is rendered, not
    read from the folder."""
    files = manifest.read(root)
    if files is None:
        raise RepositoryError(f"{root} has no {manifest.MANIFEST}: push publishes what `modelzoos build` wrote and "
                              "lists in it; rebuild the folder with `modelzoos build`")
    mine = {p: e for p, e in files.items() if any(p.startswith(f"{DATA_DIR}/{c}/") for c in configs)}
    damaged = manifest.check(root, mine)
    if damaged:
        raise RepositoryError(f"{root}: file(s) differ from its {manifest.MANIFEST}, nothing was uploaded:\n"
                              f"{manifest.describe(root, damaged)}\nrebuild those configs with `modelzoos build`")
    skipped = sorted(rel for p in root.rglob("*") if p.is_file() and (rel := p.relative_to(root).as_posix()) not in
                     files and rel != manifest.MANIFEST and not any(part.startswith(".") for part in
                                                                       p.relative_to(root).parts))
    return {p: root / p for p in sorted(mine)}, skipped


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
    skipped: tuple[str, ...] = ()  # files of the folder not in build's manifest: not published


def push(repo_dir: str | Path, repo_id: str, config: str | None = None, private: bool = False,
         token: str | None = None, revision: str = "main", *, timeout: float = TIMEOUT_S,
         retries: int = RETRIES) -> PushResult:
    """Publish a ``modelzoos build`` folder as the dataset ``repo_id``; returns what was done (``PushResult``).

    ``config=None`` pushes every config of the folder, ``config="x"`` only data/x/** (stale remote files of a
    pushed config are deleted, other configs are untouched); the card is merged (``card.merge``). The
    dataset repo is created (``private``) if missing; ``revision`` is a branch, created from main if missing.
    ``timeout``: seconds a request may go without an answer; ``retries``: retries of a request that timed out,
    could not connect or got HTTP 408/429/5xx, after waits of 2, 4, 8 … s (at most 60 s; logged).
    Raises RepositoryError (a ValueError) for a folder failing ``validate_repo`` or its manifest (before any
    network call), HubAuthError for a refused or missing token, HubError for offline mode, an unreachable Hub,
    a Hub that does not answer, or other HTTP errors. Re-run after an interruption: already uploaded files are
    skipped.
    """
    if timeout <= 0 or retries < 0:
        raise ValueError(f"--timeout must be > 0 and --retries ≥ 0, got {timeout} and {retries}")
    root = Path(repo_dir)
    if not root.is_dir():
        raise RepositoryError(f"{root} is not a directory (expected a folder written by `modelzoos build`)")
    with lock(root):  # no build changes the files while they are read
        return _push(root, repo_id, config, private, token, revision, timeout, retries)


def _push(root: Path, repo_id: str, config: str | None, private: bool, token: str | None, revision: str,
          timeout: float, retries: int) -> PushResult:
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.hf_api import RepoFile

    local_configs = validate_repo(root, config)  # before any network call; nothing is uploaded if it raises
    if constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        raise HubError(f"cannot publish {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE "
                       "and re-run; nothing was uploaded.")
    secret = token or get_token()
    if not secret:
        raise HubAuthError(f"no Hugging Face token found to publish {repo_id}: run `hf auth login` or set HF_TOKEN "
                           "to a token with write access; nothing was uploaded.")

    configs = local_configs if config is None else [config]
    files, skipped = _local_files(root, configs)
    local_card = card.render(root, repo_id)
    api = HfApi(token=token)

    def call(what: str, fn: Callable[[], T]) -> T:
        return _with_retries(repo_id, what, fn, timeout, retries)

    with _hub_errors(repo_id, api.endpoint, secret):
        call("creating the dataset repository",
             lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
        if revision != constants.DEFAULT_REVISION:
            call(f"creating the branch {revision}",
                 lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True))
        head = call("reading the repository's head", lambda: api.repo_info(repo_id, repo_type="dataset",
                                                                           revision=revision).sha)
        tree = call("listing the repository's files", lambda: list(api.list_repo_tree(
            repo_id, recursive=True, repo_type="dataset", revision=head)))
        remote = {f.path: f for f in tree if isinstance(f, RepoFile)}
        remote_card = None
        if README in remote:
            card_path = call("downloading the dataset card", lambda: api.hf_hub_download(
                repo_id, README, repo_type="dataset", revision=head))
            remote_card = Path(card_path).read_text(encoding="utf-8")
        try:
            merged = card.merge(local_card, remote_card, configs)
        except ValueError as err:
            raise HubError(f"the card README.md of {repo_id} on the Hub cannot be merged: {err}. Fix it on the "
                           "Hub (or delete it) and re-run.") from None

        changed = [p for p in files if not _same(files[p], remote.get(p))]
        unchanged = [p for p in files if p not in changed]
        stale = sorted(p for p in remote if p not in files
                       and any(p.startswith(f"{DATA_DIR}/{c}/") for c in configs))
        card_op = None if merged == remote_card else merged.encode("utf-8")
        commits, url = _commit(api, repo_id, revision, head, root, changed, stale, card_op, configs, call)
    card_configs = card.config_names(merged)
    default = next(e["config_name"] for e in split_card(merged)[0]["configs"] if e.get("default") is True)
    log.info("pushed %s to %s: %d file(s) uploaded, %d unchanged, %d deleted, %d commit(s)", ", ".join(configs),
             repo_id, len(changed), len(unchanged), len(stale), commits)
    return PushResult(repo_id, url, tuple(configs), tuple(card_configs), default,
                      tuple(changed), tuple(unchanged), tuple(stale), card_op is not None, commits, tuple(skipped))


def _same(path: Path, remote) -> bool:
    """True when the remote file (a RepoFile or None) has the content of ``path``: size, then sha256 (LFS) or
    the git blob id (regular files)."""
    if remote is None or remote.size != path.stat().st_size:
        return False
    if remote.lfs is not None:
        return manifest.sha256(path) == remote.lfs.sha256
    git = hashlib.sha1(b"blob %d\0" % remote.size)
    return manifest.digest(path, git) == remote.blob_id


def _commit(api, repo_id: str, revision: str, head: str | None, root: Path, changed: list[str], stale: list[str],
            card_bytes: bytes | None, configs: list[str], call: Callable) -> tuple[int, str]:
    """Upload and commit; returns (number of commits, URL of the last one). Blobs first, card last."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard

    if card_bytes is not None:  # the Hub checks the card's metadata at commit time: check it before any upload
        try:
            DatasetCard(card_bytes.decode("utf-8")).validate(repo_type="dataset")
        except ValueError as err:
            raise ValueError(f"the Hub rejects the dataset card README.md to publish to {repo_id}: {err}; "
                             "nothing was uploaded") from None
    adds = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(root / p)) for p in changed]
    final = [CommitOperationDelete(path_in_repo=p) for p in stale]
    if card_bytes is not None:
        final.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=card_bytes))
    prefix = f"{api.endpoint}/datasets/{repo_id}"
    if not adds and not final:
        log.info("%s is up to date at %s", repo_id, head)
        return 0, f"{prefix}/commit/{head}"
    if adds:
        log.info("uploading %d file(s) to %s", len(adds), repo_id)
        call(f"uploading {len(adds)} file(s)", lambda: api.preupload_lfs_files(
            repo_id, additions=adds, repo_type="dataset", revision=revision, free_memory=False))
    what = ", ".join(configs) if len(configs) <= 3 else f"{len(configs)} configs"
    if len(adds) + len(final) <= MAX_OPERATIONS_PER_COMMIT:
        batches = [adds + final]
    else:
        batches = [adds[i:i + MAX_OPERATIONS_PER_COMMIT] for i in range(0, len(adds), MAX_OPERATIONS_PER_COMMIT)]
        batches += [final] if final else []
    parent, url = head, None
    for i, ops in enumerate(batches, 1):
        part = f" (part {i}/{len(batches)})" if len(batches) > 1 else ""
        info = call(f"committing{part}", lambda ops=ops, part=part, parent=parent: api.create_commit(
            repo_id, operations=ops, commit_message=f"Upload {what} with modelzoos{part}", repo_type="dataset",
            revision=revision, parent_commit=parent))
        parent, url = info.oid, info.commit_url
    return len(batches), url


def _transient(err: BaseException, timeout: float) -> str | None:
    """Why a failed request is worth retrying (a timeout, no connection, HTTP 408/429/5xx), None otherwise."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if _find_cause(err, httpx2.TimeoutException) is not None:
        return f"no answer from the Hub within {timeout:g} s"
    if (down := _find_cause(err, httpx2.TransportError)) is not None:
        return f"cannot reach the Hub ({type(down).__name__}: {down})"
    http = _find_cause(err, HfHubHTTPError)
    if http is not None and http.response is not None and http.response.status_code in RETRY_STATUS:
        return f"HTTP {http.response.status_code} from the Hub"
    return None


def _with_retries(repo_id: str, what: str, fn: Callable[[], T], timeout: float, retries: int) -> T:
    """``fn()`` (one step of a push, described by ``what``) under a request timeout, retried after transient
    failures with exponential backoff; HubError naming the step when every attempt failed."""
    import httpx2
    from huggingface_hub import get_session

    start = time.monotonic()
    for attempt in range(retries + 1):
        get_session().timeout = httpx2.Timeout(timeout)  # per attempt: a failed connection renews the client
        try:
            return fn()
        except Exception as err:
            reason = _transient(err, timeout)
            if reason is None:
                raise
            if attempt == retries:
                raise HubError(f"gave up {what} for {repo_id}: {reason}, {retries + 1} attempt(s) in "
                               f"{time.monotonic() - start:.0f} s. Check the network (and HF_ENDPOINT), or raise "
                               "--timeout / --retries; re-run the same command to resume: files already on the Hub "
                               "are skipped.") from err
            wait = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt)
            log.warning("%s for %s: %s; waiting %.0f s before attempt %d of %d", what, repo_id, reason, wait,
                        attempt + 2, retries + 1)
            time.sleep(wait)
    raise AssertionError("unreachable")


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
