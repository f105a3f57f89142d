"""An in-process fake of the Hugging Face Hub HTTP API, for publishing tests without a network.

`FakeHub.handler` answers what huggingface_hub 2.x and datasets 5.2 send: repository create / info /
branches, `/api/validate-yaml`, preupload, the LFS batch API and its uploads, NDJSON commits (with additions,
LFS pointers and deletions, checked against `parentCommit`), tree listings, paths-info, and `resolve`
downloads with `Range` requests (206), for `hf_hub_download`, `list_repo_files` and
`datasets.load_dataset("org/name", config)` through `HfFileSystem`. Storage is a dict: each repository keeps one
`{path: bytes}` snapshot per commit and a branch → commit table; LFS objects are kept by sha256.

`serve()` runs a FakeHub behind a real HTTP server on 127.0.0.1, for commands in other processes (the
installed-wheel test pushes through it with `HF_ENDPOINT`).

The `fake_hub` fixture installs it with `huggingface_hub.set_client_factory` (an `httpx2.MockTransport`), points
`HF_ENDPOINT` at an address that is never contacted, disables Xet (`HF_HUB_DISABLE_XET=1`: hf_xet's Rust client
would bypass the injected HTTP client), moves `HF_HOME` into the test's tmp dir and sets `HF_TOKEN` to
`FAKE_TOKEN`. Failures are injected per route (the names in `ROUTES`): `hub.fail("lfs_upload", nth=2)` answers
the 2nd LFS upload and every later one with a 500 (an outage; neither huggingface_hub's retries nor
modelzoos.hub's sleep under the fixture) until `hub.heal()`; `hub.reject_token(token)` answers 401;
`hub.go_down()` refuses connections.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import httpx2
import pytest
import yaml

ENDPOINT = "http://fakehub.invalid"
FAKE_TOKEN = "hf_fakeTOKEN0123456789abcdefSECRET"

GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
LFS_SUFFIXES = (".parquet", ".arrow", ".safetensors", ".bin", ".npy", ".zip")
WRITE_ROUTES = {"create_repo", "create_branch", "preupload", "lfs_batch", "commit"}

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<type>model|dataset|space)s/" + _REPO
_FILES = r"/(?:(?P<type>dataset|space)s/)?" + _REPO
ROUTES: list[tuple[str, str, re.Pattern]] = [
    (method, name, re.compile(pattern + "$"))
    for method, name, pattern in [
        ("GET", "whoami", r"/api/whoami-v2"),
        ("POST", "create_repo", r"/api/repos/create"),
        ("POST", "validate_yaml", r"/api/validate-yaml"),
        ("GET", "repo_info", _API + r"(?:/revision/(?P<rev>[^/]+))?"),
        ("GET", "refs", _API + r"/refs"),
        ("POST", "create_branch", _API + r"/branch/(?P<rev>[^/]+)"),
        ("POST", "preupload", _API + r"/preupload/(?P<rev>[^/]+)"),
        ("POST", "commit", _API + r"/commit/(?P<rev>[^/]+)"),
        ("GET", "tree", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"),
        ("POST", "paths_info", _API + r"/paths-info/(?P<rev>[^/]+)"),
        ("POST", "lfs_batch", _FILES + r"\.git/info/lfs/objects/batch"),
        ("PUT", "lfs_upload", r"/__lfs/(?P<oid>[0-9a-f]{64})"),
        ("HEAD", "resolve", _FILES + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
        ("GET", "resolve", _FILES + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
    ]
]


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1, which the Hub reports as `oid` of regular files (and huggingface_hub recomputes)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:
        return git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    oid: str
    title: str
    parent: str | None
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev, rev)
        if oid not in self.commits:
            matches = [c for c in self.commits if len(rev) >= 7 and c.startswith(rev)]
            oid = matches[0] if len(matches) == 1 else oid
        return self.commits.get(oid)


@dataclass
class Fault:
    route: str
    nth: int
    status: int
    times: int | None
    seen: int = 0
    fired: int = 0

    def trips(self) -> bool:
        self.seen += 1
        if self.seen >= self.nth and (self.times is None or self.fired < self.times):
            self.fired += 1
            return True
        return False


class FakeHub:
    """Dict-backed Hub. Inspect `files(repo_id)`, `commits(repo_id)`, `requests` [(method, route, path, status)]."""

    def __init__(self, endpoint: str = ENDPOINT, token: str = FAKE_TOKEN):
        self.endpoint = endpoint.rstrip("/")
        self.token = token  # what the fixture puts in HF_TOKEN
        self.host = urlsplit(self.endpoint).netloc
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str, int]] = []  # method, route, path, status (0: connection refused)
        self.down = False
        self.faults: list[Fault] = []
        self.rejected: dict[str, int] = {}
        self._lock = threading.RLock()
        self._counter = 0

    # ---------------------------------------------------------------- test API
    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """`{path: bytes}` of the repository at `revision` (includes the `.gitattributes` the Hub creates)."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return {} if commit is None else {p: b.data for p, b in sorted(commit.files.items())}

    def commits(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        """Commit titles from the first to the head of `revision`."""
        repo = self.repos[(repo_type, repo_id)]
        titles, commit = [], repo.resolve(revision)
        while commit is not None:
            titles.append(commit.title)
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return titles[::-1]

    def count(self, route: str, status: int | None = None) -> int:
        """Requests made to `route` (answered with `status`, if given)."""
        return sum(r == route and status in (None, s) for _, r, _, s in self.requests)

    def fail(self, route: str, nth: int = 1, status: int = 500, times: int | None = None) -> Fault:
        """From the `nth` request of `route` on (counted from now), answer `status`, `times` times (None: forever)."""
        fault = Fault(route, nth, status, times)
        self.faults.append(fault)
        return fault

    def heal(self) -> None:
        """Remove every injected fault and bring the Hub back up."""
        self.faults.clear()
        self.down = False

    def go_down(self) -> None:
        """Refuse every connection (httpx2.ConnectError), as an unreachable Hub does, until `heal()`."""
        self.down = True

    def reject_token(self, token: str, status: int = 401) -> None:
        """401: every request with `token` is refused; 403: the token may read but not write."""
        self.rejected[token] = status

    def client(self) -> httpx2.Client:
        from huggingface_hub.utils._http import hf_request_event_hook  # keeps the HF_HUB_OFFLINE guard

        return httpx2.Client(transport=httpx2.MockTransport(self.handler), follow_redirects=True,
                             event_hooks={"request": [hf_request_event_hook]})

    def async_client(self) -> httpx2.AsyncClient:
        from huggingface_hub.utils._http import async_hf_request_event_hook

        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler), follow_redirects=True,
                                  event_hooks={"request": [async_hf_request_event_hook]})

    # ---------------------------------------------------------------- dispatch
    def handler(self, request: httpx2.Request) -> httpx2.Response:
        raw = request.url.raw_path.decode().split("?", 1)[0]
        route, groups = "foreign", {}
        if request.url.netloc.decode() == self.host:
            route = "unknown"
            for method, name, pattern in ROUTES:
                m = pattern.match(raw) if method == request.method else None
                if m:
                    route, groups = name, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    break
        with self._lock:
            if self.down:
                self.requests.append((request.method, route, raw, 0))
                raise httpx2.ConnectError("[Errno 111] Connection refused (fake Hub is down)", request=request)
            response = self._answer(request, route, groups)
            self.requests.append((request.method, route, raw, response.status_code))
            return response

    def _answer(self, request: httpx2.Request, route: str, groups: dict) -> httpx2.Response:
        for fault in self.faults:
            if fault.route == route and fault.trips():
                return _error(fault.status, f"injected failure of {route}")
        denied = self._auth(request, route)
        if denied is not None:
            return denied
        if route in ("foreign", "unknown"):
            return _error(404, f"not found: {request.method} {request.url}")
        return getattr(self, "_" + route)(request, **groups)

    def _auth(self, request: httpx2.Request, route: str) -> httpx2.Response | None:
        header = request.headers.get("authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        status = self.rejected.get(token) if token else None
        if status == 401:
            return _error(401, "Invalid credentials in Authorization header",
                          {"X-Error-Message": "Invalid credentials in Authorization header"})
        if route in WRITE_ROUTES and (token is None or status == 403):
            return _error(403 if token else 401, "You don't have the rights to write to this repository",
                          {"X-Error-Message": "You don't have the rights to write to this repository"})
        return None

    def _repo(self, type: str | None, repo: str) -> Repo | None:
        return self.repos.get((type or "model", repo))

    # ---------------------------------------------------------------- repositories
    def _whoami(self, request):
        return httpx2.Response(200, json={"type": "user", "name": "fake-user", "orgs": [],
                                          "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _create_repo(self, request):
        body = json.loads(request.content)
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or 'fake-user'}/{body['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.endpoint}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return _error(409, "You already created this repo", extra={"url": url})
        repo = Repo(repo_type, repo_id, private=bool(body.get("private")) or body.get("visibility") == "private")
        self.repos[(repo_type, repo_id)] = repo
        self._new_commit(repo, "main", "initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)})
        return httpx2.Response(200, json={"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, request, type, repo, rev="main"):
        r, commit = self._lookup(request, type, repo, rev)
        if commit is None:
            return r
        card = commit.files.get("README.md")
        card_data = _front_matter(card.data.decode()) if card else None
        return httpx2.Response(200, json={
            "id": repo, "_id": repo, "author": repo.split("/")[0], "sha": commit.oid, "private": r.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [], "lastModified": commit.date,
            "cardData": card_data, "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        })

    def _refs(self, request, type, repo):
        r = self._repo(type, repo)
        if r is None:
            return _repo_not_found()
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in r.branches.items()]
        return httpx2.Response(200, json={"branches": branches, "converts": [], "tags": []})

    def _create_branch(self, request, type, repo, rev):
        r = self._repo(type, repo)
        if r is None:
            return _repo_not_found()
        if rev in r.branches:
            return _error(409, f"Branch {rev} already exists")
        start = (json.loads(request.content or b"{}") or {}).get("startingPoint") or "main"
        commit = r.resolve(start)
        if commit is None:
            return _error(404, f"Invalid rev id: {start}", {"X-Error-Code": "RevisionNotFound"})
        r.branches[rev] = commit.oid
        return httpx2.Response(200, json={})

    def _validate_yaml(self, request):
        content = json.loads(request.content).get("content", "")
        try:
            _front_matter(content)
        except yaml.YAMLError as err:
            return httpx2.Response(400, json={"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []})
        return httpx2.Response(200, json={"errors": [], "warnings": []})

    # ---------------------------------------------------------------- uploads
    def _preupload(self, request, type, repo, rev):
        r, commit = self._lookup(request, type, repo, rev)
        if commit is None:
            return r
        answer = []
        for f in json.loads(request.content)["files"]:
            remote = commit.files.get(f["path"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
            answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": None if remote is None else (remote.sha256 if remote.lfs else remote.oid)})
        return httpx2.Response(200, json={"files": answer, "commitOid": commit.oid})

    def _lfs_batch(self, request, repo, type=None):
        if self._repo(type, repo) is None:
            return _repo_not_found()
        objects = []
        for obj in json.loads(request.content)["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:
                item["actions"] = {"upload": {"href": f"{self.endpoint}/__lfs/{obj['oid']}"}}
            objects.append(item)
        return httpx2.Response(200, json={"transfer": "basic", "objects": objects})

    def _lfs_upload(self, request, oid):
        data = request.content
        if hashlib.sha256(data).hexdigest() != oid:
            return _error(400, "sha256 mismatch")
        self.lfs[oid] = data
        return httpx2.Response(200)

    def _new_commit(self, repo: Repo, branch: str, title: str, files: dict[str, Blob]) -> Commit:
        self._counter += 1
        parent = repo.branches.get(branch)
        seed = f"{parent}\n{title}\n{self._counter}\n" + "".join(f"{p} {b.oid}\n" for p, b in sorted(files.items()))
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), title, parent, files,
                        datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _commit(self, request, type, repo, rev):
        r, head = self._lookup(request, type, repo, rev)
        if head is None:
            return r
        if rev not in r.branches:
            return _error(400, f"can only commit to a branch, not {rev}")
        lines = [json.loads(line) for line in request.content.splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        parent = header.get("parentCommit")
        if parent is not None and not head.oid.startswith(parent):
            return _error(412, f"A commit has happened since {parent}. Please refresh and try again.")
        files = dict(head.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return _error(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = Blob(self.lfs[value["oid"]], lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    return _error(404, "A file with this name doesn't exist", {"X-Error-Code": "EntryNotFound"})
            elif key == "deletedFolder":
                files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                return _error(400, f"unsupported commit operation {key}")
        commit = self._new_commit(r, rev, header.get("summary") or "commit", files)
        prefix = "" if r.repo_type == "model" else f"{r.repo_type}s/"
        return httpx2.Response(200, json={"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                                          "commitUrl": f"{self.endpoint}/{prefix}{repo}/commit/{commit.oid}"})

    # ---------------------------------------------------------------- listings and downloads
    def _tree(self, request, type, repo, rev, path=""):
        r, commit = self._lookup(request, type, repo, rev)
        if commit is None:
            return r
        query = {k: v[-1].lower() for k, v in parse_qs(request.url.query.decode()).items()}
        recursive = query.get("recursive") in ("true", "1")
        path = path.strip("/")
        if path and not any(p.startswith(path + "/") for p in commit.files):
            return _error(404, f"{path} is not a directory", {"X-Error-Code": "EntryNotFound"})
        base = path + "/" if path else ""
        entries: dict[str, dict] = {}
        for p in sorted(commit.files):
            if not p.startswith(base):
                continue
            parts = p[len(base):].split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                folder = base + "/".join(parts[:depth])
                entries.setdefault(folder, _folder_entry(folder))
            if len(parts) == 1 or recursive:
                entries[p] = self._file_entry(p, commit, expand=query.get("expand") in ("true", "1"))
        return httpx2.Response(200, json=list(entries.values()))

    def _paths_info(self, request, type, repo, rev):
        r, commit = self._lookup(request, type, repo, rev)
        if commit is None:
            return r
        form = parse_qs(request.content.decode())
        expand = form.get("expand", ["false"])[-1].lower() in ("true", "1")
        out = []
        for p in form.get("paths", []):
            p = p.strip("/")
            if p in commit.files:
                out.append(self._file_entry(p, commit, expand))
            elif p == "" or any(f.startswith(p + "/") for f in commit.files):
                out.append(_folder_entry(p))
        return httpx2.Response(200, json=out)

    def _file_entry(self, path: str, commit: Commit, expand: bool) -> dict:
        blob = commit.files[path]
        entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _resolve(self, request, repo, rev, path, type=None):
        r, commit = self._lookup(request, type, repo, rev)
        if commit is None:
            return r
        blob = commit.files.get(path)
        if blob is None:
            return _error(404, f"Entry not found: {path}", {"X-Error-Code": "EntryNotFound"})
        data, status, size = blob.data, 200, len(blob.data)
        headers = {"ETag": f'"{blob.oid}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(size)})
        spec = request.headers.get("range")
        if spec:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
            if m is None or m.groups() == ("", ""):
                return _error(416, f"bad range {spec}")
            start, end = m.groups()
            if start == "":
                start, end = max(0, size - int(end)), size - 1
            else:
                start, end = int(start), min(size - 1, int(end)) if end else size - 1
            if start >= size and size > 0:
                return _error(416, f"range {spec} outside {size} bytes", {"Content-Range": f"bytes */{size}"})
            data, status = data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(len(data))
        return httpx2.Response(status, headers=headers, content=b"" if request.method == "HEAD" else data)

    def _lookup(self, request, type, repo, rev) -> tuple[Repo | httpx2.Response, Commit | None]:
        """(repo, commit at rev), or (an error response, None); a private repo is not found without a token."""
        r = self._repo(type, repo)
        if r is None or (r.private and not request.headers.get("authorization")):
            return _repo_not_found(), None
        commit = r.resolve(rev)
        if commit is None:
            return _error(404, f"Invalid rev id: {rev}", {"X-Error-Code": "RevisionNotFound"}), None
        return r, commit


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _front_matter(text: str) -> dict | None:
    m = re.match(r"^---\s*\n(.*?\n)?---\s*(\n|$)", text, re.S)
    return (yaml.safe_load(m.group(1) or "") or {}) if m else None


def _error(status: int, message: str, headers: dict | None = None, extra: dict | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers or {}, json={"error": message, **(extra or {})})


def _repo_not_found() -> httpx2.Response:
    return _error(404, "Repository not found", {"X-Error-Code": "RepoNotFound"})


# ---------------------------------------------------------------- over HTTP
class _HTTPHandler(BaseHTTPRequestHandler):
    """Hands each HTTP request to the server's FakeHub as an httpx2.Request and writes its answer back."""

    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _any(self) -> None:
        request = httpx2.Request(self.command, self.hub.endpoint + self.path,
                                 headers=[(k, v) for k, v in self.headers.items() if k.lower() != "host"]
                                 + [("Host", self.hub.host)], content=self._body())
        response = self.hub.handler(request)
        body = response.read()
        self.send_response(response.status_code)
        for key, value in response.headers.multi_items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

    def log_message(self, *args) -> None:  # quiet
        pass


@contextlib.contextmanager
def serve() -> Iterator[FakeHub]:
    """A FakeHub answering real HTTP on 127.0.0.1 (its ``endpoint``) while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HTTPHandler)
    hub = FakeHub(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (_HTTPHandler,), {"hub": hub})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- fixture
class _NoWaitTime:
    """Stands in for the `time` module inside huggingface_hub's HTTP backoff, so retries do not sleep."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A `FakeHub` serving every huggingface_hub / datasets HTTP call of the test; restored afterwards."""
    import datasets.config
    import huggingface_hub
    from huggingface_hub import HfFileSystem, constants
    from huggingface_hub.utils import _http

    import modelzoos.hub

    hub = FakeHub()
    home = tmp_path / "hf_home"
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home), "HF_TOKEN": hub.token,
           "HF_HUB_CACHE": str(home / "hub"), "HF_DATASETS_CACHE": str(home / "datasets"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    # The libraries read these at import time: patch the module constants too.
    for name, value in {"ENDPOINT": hub.endpoint,
                        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HUB_DISABLE_XET": True, "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True,
                        "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
                        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
                        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {hub.host.split(":")[0]}}.items():
        monkeypatch.setattr(constants, name, value)
    for name, value in {"HF_ENDPOINT": hub.endpoint,
                        "HUB_DATASETS_URL": hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
                        "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False, "HF_CACHE_HOME": str(home),
                        "HF_DATASETS_CACHE": home / "datasets", "HF_MODULES_CACHE": home / "modules",
                        "DOWNLOADED_DATASETS_PATH": str(home / "datasets" / "downloads"),
                        "EXTRACTED_DATASETS_PATH": str(home / "datasets" / "downloads" / "extracted")}.items():
        if hasattr(datasets.config, name):
            monkeypatch.setattr(datasets.config, name, value)
    monkeypatch.setattr(_http, "time", _NoWaitTime())
    monkeypatch.setattr(modelzoos.hub, "time", _NoWaitTime())  # and inside modelzoos.hub's own retries
    huggingface_hub.set_client_factory(hub.client)
    huggingface_hub.set_async_client_factory(hub.async_client)
    HfFileSystem.clear_instance_cache()
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(_http.default_client_factory)
        huggingface_hub.set_async_client_factory(_http.default_async_client_factory)
        huggingface_hub.close_session()
        HfFileSystem.clear_instance_cache()
