"""Publish a dataset folder to the Hugging Face Hub as one commit, and fetch one back at a pinned commit.

A push is all or nothing: the folder is verified before anything is sent, and every file goes into a single
`create_commit` (through `upload_folder`), so a failed upload leaves the repo at its previous revision.
Unchanged files are dropped by the Hub client (it compares oids from the preupload call), so publishing
unchanged data makes no commit. The token comes from `token=`, else `HF_TOKEN` or `hf auth login`, as
huggingface_hub resolves it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from hub_sync import format as fmt
from hub_sync.card import render_card
from hub_sync.manifest import Manifest
from hub_sync.verify import verify_dataset
from hub_sync.writer import write_text

REPO_TYPE = "dataset"
PUBLISHED_PATTERNS = [
    fmt.CARD_FILE,
    fmt.MANIFEST_FILE,
    f"{fmt.NEURONS_DIR}/*.parquet",
    f"{fmt.EXAMPLES_DIR}/*.parquet",
    f"{fmt.EXPLANATIONS_DIR}/*.parquet",
]
# Remote layer files that the folder no longer has are deleted in the same commit, so the repo mirrors the folder.
STALE_PATTERNS = [f"{fmt.NEURONS_DIR}/*", f"{fmt.EXAMPLES_DIR}/*", f"{fmt.EXPLANATIONS_DIR}/*"]
NOT_PULLED = [".gitattributes"]


class PublishError(Exception):
    """A push or pull that cannot go ahead; `problems` lists what is wrong with the folder, if that is why."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


def describe(error: BaseException) -> str:
    """One line for a client error: an HTTP error's status and the Hub's reason, or any other error with its cause."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    if isinstance(error, HfHubHTTPError):
        return " ".join(lines[:2])
    cause = [line.strip() for line in str(error.__cause__ or "").splitlines() if line.strip()]
    if cause and cause[0] not in lines[0]:
        return f"{lines[0]} ({cause[0]})"
    return lines[0]


@contextmanager
def hub_errors(action: str) -> Iterator[None]:
    """Turn the Hub clients' network, HTTP and validation errors into one PublishError that says what failed."""
    try:
        yield
    except (httpx2.HTTPError, OSError, ValueError, RuntimeError) as error:
        raise PublishError(f"{action} failed: {describe(error)}") from error


def verified_manifest(folder: Path) -> Manifest:
    """The folder's manifest once verify_dataset finds nothing wrong; otherwise a PublishError listing why."""
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder")
    problems = verify_dataset(str(folder))
    if problems:
        raise PublishError(f"{folder} is not a valid Neuroscope dataset; nothing was uploaded", problems)
    return Manifest.from_json(json.loads((folder / fmt.MANIFEST_FILE).read_text(encoding="utf-8")))


def refresh_card(folder: Path, manifest: Manifest, repo_id: str) -> None:
    """Rewrite the folder's README.md for this repo id, so the folder and the published repo stay identical."""
    card = render_card(manifest, repo_id=repo_id)
    card_path = folder / fmt.CARD_FILE
    if not card_path.is_file() or card_path.read_text(encoding="utf-8") != card:
        write_text(card_path, card)


def default_message(manifest: Manifest) -> str:
    return f"Publish Neuroscope neurons of {manifest.model.display_name} ({len(manifest.harvest.layers)} layers)"


def push(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> str | None:
    """Verify `folder`, refresh its card and publish it as one commit; the commit sha, or None if nothing changed."""
    folder = Path(folder)
    manifest = verified_manifest(folder)
    refresh_card(folder, manifest, repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    with hub_errors(f"Publishing {folder} to {repo_id} on {api.endpoint}"):
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
        parent = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=branch).sha
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=REPO_TYPE,
            revision=branch,
            commit_message=message or default_message(manifest),
            allow_patterns=PUBLISHED_PATTERNS,
            delete_patterns=STALE_PATTERNS,
            parent_commit=parent,
        )
    return None if commit.oid == parent else commit.oid


def pull(
    repo_id: str,
    folder: str | Path,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> str:
    """Download a dataset repo into `folder` at one commit (the revision's sha, pinned first); that sha."""
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(f"Pulling {repo_id} from {api.endpoint}"):
        sha = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
        snapshot_download(
            repo_id,
            repo_type=REPO_TYPE,
            revision=sha,
            local_dir=folder,
            endpoint=endpoint,
            token=token,
            ignore_patterns=NOT_PULLED,
        )
    return sha
