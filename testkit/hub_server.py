"""A loopback Hugging Face Hub that the test suite owns, for the real clients over real HTTP.

No pip-installable Hub server exists, so this one implements the endpoints that `HfApi` (create_repo,
create_commit / upload_folder with LFS, repo_info, list_repo_tree, get_paths_info, list_repo_commits,
create_branch), `hf_hub_download`, `snapshot_download`, `HfFileSystem` and `datasets.load_dataset` call,
as huggingface_hub 2.4 and datasets 5.2 send them. Commits are atomic: a commit's files become visible only
when the commit endpoint succeeds; LFS objects uploaded before a failed commit stay invisible. Every
request is logged (method, path, status, Range, body bytes sent) so a test can assert what a client fetched,
and faults can be armed (drop the connection during an LFS upload) to test interrupted pushes.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import json
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from testkit.support import LoopbackServer, OwnedHTTPServer

REPO_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space", "models": "model"}
URL_PREFIXES = {"dataset": "datasets/", "space": "spaces/", "model": ""}
LFS_SUFFIXES = ("*.parquet", "*.arrow", "*.bin", "*.safetensors", "*.pt", "*.gguf", "*.npy", "*.zst", "*.gz")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_SUFFIXES).encode()
COPY_CHUNK = 1 << 20


class HubError(Exception):
    """An HTTP error reply, with the X-Error-Code huggingface_hub maps to its exception classes."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        repo_commit: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.repo_commit = repo_commit
        self.headers = headers or {}


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: its content lives in the blob store under `sha256`."""

    path: str
    size: int
    sha256: str
    lfs: bool
    git_oid: str  # git blob sha1 of the content, or of the LFS pointer for LFS files

    @classmethod
    def make(cls, path: str, size: int, sha256: str, lfs: bool, content: bytes | None = None) -> StoredFile:
        git_oid = git_blob_sha1(lfs_pointer(sha256, size)) if lfs else git_blob_sha1(content or b"")
        return cls(path=path, size=size, sha256=sha256, lfs=lfs, git_oid=git_oid)

    @property
    def oid(self) -> str:
        """What the Hub calls the file's oid in ETags and preupload replies: sha256 for LFS, git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    description: str
    date: dt.datetime
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: dt.datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        return f"{URL_PREFIXES[self.repo_type]}{self.repo_id}"

    def resolve(self, revision: str) -> Commit:
        sha = self.branches.get(revision, revision)
        if sha not in self.commits:
            raise HubError(404, f"Revision not found: {revision}", "RevisionNotFound")
        return self.commits[sha]

    def history(self, commit: Commit) -> Iterator[Commit]:
        current: Commit | None = commit
        while current is not None:
            yield current
            current = self.commits[current.parent] if current.parent else None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # URL path, percent-decoded, without the query string
    query: str
    status: int  # 0 when the server dropped the connection on purpose
    range: str | None
    bytes_sent: int  # response body bytes


class BlobStore:
    """Content-addressed file storage on disk, so big stores are served by seek + read, not held in memory."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def __contains__(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_bytes(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        if sha256 not in self:
            self._publish(sha256, lambda tmp: tmp.write_bytes(content))
        return sha256

    def put_file(self, source: Path) -> tuple[str, int]:
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            while chunk := f.read(COPY_CHUNK):
                digest.update(chunk)
        sha256 = digest.hexdigest()
        if sha256 not in self:
            self._publish(sha256, lambda tmp: shutil.copyfile(source, tmp))
        return sha256, source.stat().st_size

    def _publish(self, sha256: str, write) -> None:
        """Write to a temporary name, then rename: a reader never sees a half-written blob."""
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        write(tmp)
        tmp.replace(self.path(sha256))


@dataclass
class LfsUploadFault:
    """Drop the connection halfway through the PUT of the `nth` distinct LFS object, `times` times (None: always)."""

    nth: int
    times: int | None
    seen_oids: list[str] = field(default_factory=list)

    def should_drop(self, oid: str) -> bool:
        if oid not in self.seen_oids:
            self.seen_oids.append(oid)
        if len(self.seen_oids) < self.nth or self.seen_oids[self.nth - 1] != oid:
            return False
        if self.times is None:
            return True
        if self.times > 0:
            self.times -= 1
            return True
        return False


class HubState:
    """Repos, commits and blobs; every mutation holds the lock so a commit lands all at once or not at all."""

    def __init__(self, blobs: BlobStore):
        self.blobs = blobs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self._commit_counter = 0

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[Repo, bool]:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return self.repos[(repo_type, repo_id)], False
            repo = Repo(repo_type, repo_id, private, dt.datetime.now(dt.timezone.utc))
            self.repos[(repo_type, repo_id)] = repo
            sha256 = self.blobs.put_bytes(GITATTRIBUTES)
            attributes = StoredFile.make(".gitattributes", len(GITATTRIBUTES), sha256, False, GITATTRIBUTES)
            self.commit(repo, "main", "initial commit", "", {".gitattributes": attributes}, [])
            return repo, True

    def commit(
        self,
        repo: Repo,
        branch: str,
        title: str,
        description: str,
        added: dict[str, StoredFile],
        deleted: list[tuple[str, bool]],
        parent_commit: str | None = None,
    ) -> Commit:
        with self.lock:
            head_sha = repo.branches.get(branch)
            if head_sha is None and repo.branches:
                raise HubError(404, f"Revision not found: {branch}", "RevisionNotFound")
            if parent_commit is not None and parent_commit != head_sha:
                raise HubError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(repo.commits[head_sha].files) if head_sha else {}
            for path, is_folder in deleted:
                doomed = [p for p in files if p == path or (is_folder and p.startswith(path.rstrip("/") + "/"))]
                if not doomed:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            files.update(added)
            self._commit_counter += 1
            now = dt.datetime.now(dt.timezone.utc)
            seed = f"{repo.repo_id}\0{head_sha}\0{title}\0{self._commit_counter}\0{now.isoformat()}"
            sha = hashlib.sha1(seed.encode()).hexdigest()
            commit = Commit(sha, head_sha, title, description, now, files)
            repo.commits[sha] = commit
            repo.branches[branch] = sha
            return commit

    def add_folder(self, repo_type: str, repo_id: str, folder: Path, message: str) -> str:
        """One commit on main adding (or overwriting) every file of `folder`; the repo is created if missing."""
        repo, _ = self.create_repo(repo_type, repo_id, private=False)
        added = {}
        for source in sorted(p for p in folder.rglob("*") if p.is_file()):
            path = source.relative_to(folder).as_posix()
            sha256, size = self.blobs.put_file(source)
            with open(source, "rb") as f:
                sample = f.read(512)
            lfs = is_lfs(path, size, sample)
            content = None if lfs else source.read_bytes()
            added[path] = StoredFile.make(path, size, sha256, lfs, content)
        return self.commit(repo, "main", message, "", added, []).sha


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    """The Hub's rule of thumb: binary content, a big file, or a .gitattributes LFS pattern."""
    return size >= LFS_MIN_SIZE or b"\0" in sample or any(fnmatch.fnmatch(path, p) for p in LFS_SUFFIXES)


def tree_oid(commit: Commit, folder: str) -> str:
    prefix = folder + "/"
    listing = "".join(f"{f.path}\0{f.git_oid}\n" for p, f in sorted(commit.files.items()) if p.startswith(prefix))
    return hashlib.sha1(listing.encode()).hexdigest()


def folders_of(commit: Commit) -> set[str]:
    folders = set()
    for path in commit.files:
        parts = path.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return folders


def last_commit_touching(repo: Repo, head: Commit, path: str) -> Commit:
    """The newest commit in head's history where `path` (file or folder) changed."""
    prefix = path + "/"

    def snapshot(commit: Commit) -> dict[str, str]:
        return {p: f.git_oid for p, f in commit.files.items() if p == path or p.startswith(prefix)}

    for commit in repo.history(head):
        parent = repo.commits[commit.parent] if commit.parent else None
        if parent is None or snapshot(parent) != snapshot(commit):
            return commit
    return head


def entry_json(repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
    stored = commit.files.get(path)
    if stored is not None:
        entry = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": stored.pointer_size}
    else:
        entry = {"type": "directory", "oid": tree_oid(commit, path), "size": 0, "path": path}
    if expand:
        touched = last_commit_touching(repo, commit, path)
        entry["lastCommit"] = {"id": touched.sha, "title": touched.title, "date": iso(touched.date)}
    return entry


def card_data(commit: Commit, blobs: BlobStore) -> dict | None:
    """The README's YAML front matter, which the Hub returns as `cardData`."""
    card = commit.files.get("README.md")
    if card is None:
        return None
    text = blobs.path(card.sha256).read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front_matter = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    try:
        data = yaml.safe_load(front_matter)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """First range of a `bytes=` header as an inclusive (start, end), or None when malformed or unsatisfiable."""
    spec = header.strip().removeprefix("bytes=").split(",")[0].strip()
    start_text, _, end_text = spec.partition("-")
    try:
        if not start_text:
            length = int(end_text)
            return (max(0, size - length), size - 1) if length > 0 and size > 0 else None
        start = int(start_text)
        end = min(int(end_text), size - 1) if end_text else size - 1
    except ValueError:
        return None
    return (start, end) if start <= end and start < size else None


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OwnedHTTPServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        """Silenced: the hub keeps its own structured request log."""

    # ---- plumbing -------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self._logged: LoggedRequest | None = None
        self._body_read = False
        self._url = urlsplit(self.path)
        self._query = parse_qs(self._url.query)
        self._segments = [unquote(s) for s in self._url.path.split("/") if s]
        try:
            self._route()
        except HubError as error:
            if not self._body_read:  # keep-alive: the next request starts where this body ends
                self._read_body()
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if self._logged is None:
                self._log_reply(0, 0)

    def _log_reply(self, status: int, body_bytes: int) -> None:
        """Logged before the body goes out, so a client holding its reply always finds it in the log."""
        entry = LoggedRequest(
            method=self.command,
            path=unquote(self._url.path),
            query=self._url.query,
            status=status,
            range=self.headers.get("Range"),
            bytes_sent=body_bytes,
        )
        self.server.owner.record(entry)
        self._logged = entry

    def _read_body(self) -> bytes:
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict:
        try:
            return json.loads(self._read_body() or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        body_bytes = 0 if self.command == "HEAD" else len(body) if length is None else length
        self._log_reply(status, body_bytes)
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": str(error).encode("ascii", "replace").decode(), **error.headers}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        if error.repo_commit:
            headers["X-Repo-Commit"] = error.repo_commit
        self._send_json({"error": str(error)}, error.status, headers)

    @property
    def base_url(self) -> str:
        return self.server.owner.url

    # ---- routing --------------------------------------------------------------------------------------

    def _route(self) -> None:
        s = self._segments
        method = self.command
        if s[:1] == ["api"]:
            self._route_api(method, s[1:])
            return
        if len(s) >= 4 and s[0] in REPO_TYPE_PREFIXES and s[2].endswith(".git"):
            self._route_lfs(method, REPO_TYPE_PREFIXES[s[0]], f"{s[1]}/{s[2][:-4]}", s[3:])
            return
        if len(s) >= 3 and s[1].endswith(".git"):
            self._route_lfs(method, "model", f"{s[0]}/{s[1][:-4]}", s[2:])
            return
        repo_type, rest = (REPO_TYPE_PREFIXES[s[0]], s[1:]) if s and s[0] in REPO_TYPE_PREFIXES else ("model", s)
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
            return
        raise HubError(404, f"No route for {method} {self.path}")

    def _route_api(self, method: str, s: list[str]) -> None:
        if method == "POST" and s == ["repos", "create"]:
            self._create_repo()
            return
        if method == "POST" and s == ["validate-yaml"]:
            self._read_body()
            self._send_json({"errors": [], "warnings": []})
            return
        if len(s) < 3 or s[0] not in REPO_TYPE_PREFIXES:
            raise HubError(404, f"No route for {method} {self.path}")
        repo = self.server.owner.state.repo(REPO_TYPE_PREFIXES[s[0]], f"{s[1]}/{s[2]}")
        action, args = (s[3], s[4:]) if len(s) > 3 else ("", [])
        revision = args[0] if args else "main"
        path = "/".join(args[1:])
        routes = {
            ("GET", ""): lambda: self._repo_info(repo, "main"),
            ("GET", "revision"): lambda: self._repo_info(repo, "/".join(args)),
            ("POST", "preupload"): lambda: self._preupload(repo, revision),
            ("POST", "commit"): lambda: self._commit(repo, revision),
            ("GET", "tree"): lambda: self._tree(repo, revision, path),
            ("POST", "paths-info"): lambda: self._paths_info(repo, revision),
            ("GET", "commits"): lambda: self._commits(repo, revision),
            ("POST", "branch"): lambda: self._create_branch(repo, "/".join(args)),
        }
        handler = routes.get((method, action))
        if handler is None:
            raise HubError(404, f"No route for {method} {self.path}")
        handler()

    def _route_lfs(self, method: str, repo_type: str, repo_id: str, s: list[str]) -> None:
        repo = self.server.owner.state.repo(repo_type, repo_id)
        if method == "POST" and s == ["info", "lfs", "objects", "batch"]:
            self._lfs_batch(repo)
            return
        if method == "PUT" and len(s) == 4 and s[:3] == ["info", "lfs", "objects"]:
            self._lfs_put(s[3])
            return
        raise HubError(404, f"No route for {method} {self.path}")

    # ---- repos ----------------------------------------------------------------------------------------

    def _create_repo(self) -> None:
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
        repo, created = self.server.owner.state.create_repo(repo_type, repo_id, private)
        url = f"{self.base_url}/{repo.url_path}"
        if created:
            self._send_json({"url": url, "name": repo_id, "id": repo_id})
        else:
            self._send_json({"error": "You already created this repo", "url": url}, 409)

    def _repo_info(self, repo: Repo, revision: str) -> None:
        with self.server.owner.state.lock:
            commit = repo.resolve(revision)
        blobs = "blobs" in self._query and self._query["blobs"][0].lower() == "true"
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling |= {"size": stored.size, "blobId": stored.git_oid}
                if stored.lfs:
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256, "pointerSize": stored.pointer_size}
            siblings.append(sibling)
        self._send_json(
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": iso(commit.date),
                "createdAt": iso(repo.created),
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "cardData": card_data(commit, self.server.owner.state.blobs),
                "siblings": siblings,
            }
        )

    def _create_branch(self, repo: Repo, branch: str) -> None:
        payload = self._json_body()
        state = self.server.owner.state
        with state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Branch already exists: {branch}")
            repo.branches[branch] = repo.resolve(payload.get("startingPoint") or "main").sha
        self._send_json({})

    def _commits(self, repo: Repo, revision: str) -> None:
        with self.server.owner.state.lock:
            history = list(repo.history(repo.resolve(revision)))
        self._send_json(
            [
                {
                    "id": c.sha,
                    "title": c.title,
                    "message": c.description,
                    "authors": [{"user": "hub-test"}],
                    "date": iso(c.date),
                }
                for c in history
            ]
        )

    # ---- upload ---------------------------------------------------------------------------------------

    def _preupload(self, repo: Repo, revision: str) -> None:
        payload = self._json_body()
        with self.server.owner.state.lock:
            commit = repo.resolve(revision)
        files = []
        for item in payload.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            remote = commit.files.get(item["path"])
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if is_lfs(item["path"], int(item["size"]), sample) else "regular",
                    "shouldIgnore": False,
                    "oid": remote.oid if remote else None,
                }
            )
        self._send_json({"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, repo: Repo) -> None:
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are supported")
        objects = []
        for item in payload.get("objects", []):
            obj = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.server.owner.state.blobs:
                href = f"{self.base_url}/{repo.url_path}.git/info/lfs/objects/{item['oid']}"
                obj["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(obj)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, oid: str) -> None:
        hub = self.server.owner
        blobs = hub.state.blobs
        length = int(self.headers.get("Content-Length") or 0)
        if hub.should_drop_lfs_upload(oid):
            self.rfile.read(length // 2)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if blobs.put_bytes(self._read_body()) != oid:
            raise HubError(400, f"Uploaded content does not match its LFS oid {oid}")
        self._send(200, b"")

    def _commit(self, repo: Repo, branch: str) -> None:
        if "create_pr" in self._query:
            raise HubError(400, "Pull requests are not supported by this test hub")
        if branch not in repo.branches:
            raise HubError(404, f"Cannot commit to {branch}: not a branch of {repo.repo_id}", "RevisionNotFound")
        header: dict = {}
        added: dict[str, StoredFile] = {}
        deleted: list[tuple[str, bool]] = []
        blobs = self.server.owner.state.blobs
        for line in self._read_body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"])
                sha256 = blobs.put_bytes(content)
                added[value["path"]] = StoredFile.make(value["path"], len(content), sha256, False, content)
            elif key == "lfsFile":
                if value["oid"] not in blobs:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                size = blobs.path(value["oid"]).stat().st_size
                added[value["path"]] = StoredFile.make(value["path"], size, value["oid"], True)
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append((value["path"], key == "deletedFolder"))
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        commit = self.server.owner.state.commit(
            repo,
            branch,
            header.get("summary") or "Commit",
            header.get("description") or "",
            added,
            deleted,
            parent_commit=header.get("parentCommit"),
        )
        self._send_json(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.base_url}/{repo.url_path}/commit/{commit.sha}",
                "hookOutput": "",
            }
        )

    # ---- listing --------------------------------------------------------------------------------------

    def _tree(self, repo: Repo, revision: str, folder: str) -> None:
        recursive = self._query.get("recursive", ["false"])[0].lower() == "true"
        expand = self._query.get("expand", ["false"])[0].lower() == "true"
        with self.server.owner.state.lock:
            commit = repo.resolve(revision)
        folder = folder.strip("/")
        folders = folders_of(commit)
        if folder and folder not in folders:
            raise HubError(404, f"Folder not found: {folder}", "EntryNotFound", commit.sha)
        prefix = folder + "/" if folder else ""
        paths = sorted(p for p in set(commit.files) | folders if p.startswith(prefix))
        if not recursive:
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        self._send_json([entry_json(repo, commit, p, expand) for p in paths])

    def _paths_info(self, repo: Repo, revision: str) -> None:
        body = self._read_body().decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            form = {k: v if isinstance(v, list) else [v] for k, v in json.loads(body or "{}").items()}
        else:
            form = parse_qs(body)
        expand = str(form.get("expand", ["false"])[0]).lower() == "true"
        with self.server.owner.state.lock:
            commit = repo.resolve(revision)
        folders = folders_of(commit)
        wanted = [str(p).strip("/") for p in form.get("paths", [])]
        self._send_json(
            [entry_json(repo, commit, p, expand) for p in wanted if p in commit.files or p in folders]
        )

    # ---- download -------------------------------------------------------------------------------------

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        state = self.server.owner.state
        repo = state.repo(repo_type, repo_id)
        with state.lock:
            commit = repo.resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.sha)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{stored.oid}"',
            "X-Repo-Commit": commit.sha,
        }
        if stored.lfs:
            headers |= {"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)}
        start, end, status = 0, stored.size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            wanted = parse_range(range_header, stored.size)
            if wanted is None:
                unsatisfiable = {"Content-Range": f"bytes */{stored.size}"}
                raise HubError(416, f"Range not satisfiable: {range_header}", headers=unsatisfiable)
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
        self._stream_blob(state.blobs.path(stored.sha256), start, end, status, headers)

    def _stream_blob(self, blob: Path, start: int, end: int, status: int, headers: dict[str, str]) -> None:
        length = max(0, end - start + 1)
        self._send(status, b"", headers, length=length)
        if self.command == "HEAD":
            return
        sent = 0
        try:
            with open(blob, "rb") as f:
                f.seek(start)
                while sent < length and (chunk := f.read(min(COPY_CHUNK, length - sent))):
                    self.wfile.write(chunk)
                    sent += len(chunk)
        finally:
            if sent < length:
                self.server.owner.amend_bytes_sent(self._logged, sent)


class HubServer(LoopbackServer):
    """The loopback Hub: start it, point clients at `url` (HF_ENDPOINT or `endpoint=`), read `requests()`."""

    def __init__(self, storage_dir: str | Path | None = None):
        super().__init__(HubRequestHandler, "hub-server")
        self._own_storage = storage_dir is None
        self.storage_dir = Path(storage_dir or tempfile.mkdtemp(prefix="hub-server-"))
        self.state = HubState(BlobStore(self.storage_dir / "blobs"))
        self._fault: LfsUploadFault | None = None

    def stop(self) -> None:
        super().stop()
        if self._own_storage:
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    # ---- request log ----------------------------------------------------------------------------------

    def amend_bytes_sent(self, request: LoggedRequest | None, bytes_sent: int) -> None:
        """Correct a logged reply whose body was cut short (the client went away)."""
        with self._log_lock:
            for index in range(len(self._log) - 1, -1, -1):
                if self._log[index] is request:
                    self._log[index] = replace(request, bytes_sent=bytes_sent)
                    return

    # ---- faults ---------------------------------------------------------------------------------------

    def drop_lfs_upload(self, nth: int = 1, times: int | None = None) -> None:
        """Drop the connection halfway through the PUT of the nth distinct LFS object, `times` times (None: always)."""
        self._fault = LfsUploadFault(nth=nth, times=times)

    def clear_faults(self) -> None:
        self._fault = None

    def should_drop_lfs_upload(self, oid: str) -> bool:
        with self._log_lock:
            return self._fault is not None and self._fault.should_drop(oid)

    # ---- direct access for tests ----------------------------------------------------------------------

    def add_folder(self, repo_id: str, folder: str | Path, repo_type: str = "dataset", message: str = "Add") -> str:
        """Commit a local folder straight into a repo (no HTTP): a fast way to serve a big store to readers."""
        return self.state.add_folder(repo_type, repo_id, Path(folder), message)

    def commit_shas(self, repo_id: str, repo_type: str = "dataset", branch: str = "main") -> list[str]:
        """Commit shas of a branch, oldest first."""
        with self.state.lock:
            repo = self.state.repo(repo_type, repo_id)
            return [c.sha for c in reversed(list(repo.history(repo.resolve(branch))))]

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """Every file of a revision with its content."""
        with self.state.lock:
            commit = self.state.repo(repo_type, repo_id).resolve(revision)
        return {p: self.state.blobs.path(f.sha256).read_bytes() for p, f in commit.files.items()}
