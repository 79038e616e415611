"""Models and datasets by hub id, through huggingface_hub's `snapshot_download`: resumable downloads with progress
bars, a token from HF_TOKEN or `hf auth login`, another hub (or a mirror) through HF_ENDPOINT, and a local cache
that is read when the hub cannot be reached. The commit a revision resolved to is the snapshot folder's name; the
run records it (`sources.json`), so a run can be repeated on the same files.

Offline (`--offline`, or HF_HUB_OFFLINE=1): only the cache is read, and a repo that is not there is one error that
says how to fetch it.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from weitiao.errors import ModelNotFoundError

# a hub id: owner/name, each part letters, digits, '-', '_' or '.'
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a model needs: config, weights (safetensors; pickle only when converting deliberately), tokenizer, template
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.py"]
PICKLE_FILES = ["*.bin", "*.pt", "*.pth"]


MODELSCOPE = "modelscope:"  # model.name_or_path: modelscope:OWNER/NAME downloads from ModelScope instead


def is_hub_id(text: str) -> bool:
    text = text.removeprefix(MODELSCOPE)
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def snapshot(repo_id: str, kind: str, revision: str | None, field: str, patterns: list[str] | None = None
             ) -> tuple[Path, str]:
    """(local folder, commit) of `repo_id` (`kind`: model or dataset) at `revision`, downloaded when needed."""
    from huggingface_hub import snapshot_download

    where = f"{field}: {repo_id!r}"
    if repo_id.startswith(MODELSCOPE):
        return modelscope_snapshot(repo_id.removeprefix(MODELSCOPE), revision, where, patterns, kind)
    with hub_errors(where, repo_id, kind, revision):
        folder = snapshot_download(repo_id, repo_type=kind, revision=revision, allow_patterns=patterns)
    return Path(folder), Path(folder).name


def commit(repo_id: str, kind: str, revision: str | None, field: str) -> str:
    """The commit `revision` of `repo_id` resolves to on the hub, asked without downloading anything (a streamed
    dataset is read from the hub as training reads it)."""
    from huggingface_hub import HfApi, constants

    where = f"{field}: {repo_id!r}"
    with hub_errors(where, repo_id, kind, revision):
        try:
            return HfApi().repo_info(repo_id, repo_type=kind, revision=revision).sha
        except Exception as err:
            # a connection that failed: huggingface_hub's HTTP client raises its TransportError (httpx or httpx2)
            if not any(c.__name__ == "TransportError" for c in type(err).__mro__):
                raise
            raise ModelNotFoundError(f"{where}: the hub ({constants.ENDPOINT}) cannot be reached to stream it: check "
                                     "the connection or HF_ENDPOINT") from None


@contextmanager
def hub_errors(where: str, repo_id: str, kind: str, revision: str | None):
    """huggingface_hub's errors as one sentence that says what to do (ModelNotFoundError)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        yield
    except GatedRepoError:
        raise ModelNotFoundError(f"{where} is gated on the hub: accept its terms on its page, then log in "
                                 "(`hf auth login`) or set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"{where}: revision {revision!r} does not exist") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"{where} is not a {kind} on the hub ({constants.ENDPOINT}), or it is private: "
                                 "for a private repo log in (`hf auth login`) or set HF_TOKEN") from None
    except LocalEntryNotFoundError:
        if offline():
            raise ModelNotFoundError(
                f"{where} is not in the local cache ({constants.HF_HUB_CACHE}) and weitiao is offline (--offline "
                f"or HF_HUB_OFFLINE=1): run once online to download it, or `hf download {repo_id}"
                f"{' --repo-type dataset' if kind == 'dataset' else ''}`") from None
        raise ModelNotFoundError(f"{where}: the hub ({constants.ENDPOINT}) cannot be reached and the {kind} is not "
                                 "in the local cache: check the connection or HF_ENDPOINT") from None
    except HfHubHTTPError as err:
        raise ModelNotFoundError(f"{where}: the hub refused the download: {str(err).splitlines()[0]}") from None


def modelscope_snapshot(repo_id: str, revision: str | None, where: str, patterns: list[str] | None,
                        kind: str = "model") -> tuple[Path, str]:
    """(local folder, revision) of a ModelScope model or dataset (`kind`), through ModelScope's own client (its
    cache: MODELSCOPE_CACHE;
    another server: MODELSCOPE_ENDPOINT; a token: MODELSCOPE_API_TOKEN). Its snapshot folder is named by the
    revision, which is what the run records (the client does not resolve a branch to a commit)."""
    from modelscope import snapshot_download

    revision = revision or "master"
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=offline(),
                                   endpoint=os.environ.get("MODELSCOPE_ENDPOINT"), repo_type=kind)
    except Exception as err:  # noqa: BLE001 - modelscope_hub raises its own HTTP and lookup errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if offline():
            raise ModelNotFoundError(f"{where} is not in ModelScope's local cache and weitiao is offline (--offline "
                                     f"or HF_HUB_OFFLINE=1): run once online, or `modelscope download {repo_id}` "
                                     f"({first})") from None
        raise ModelNotFoundError(f"{where}: ModelScope could not provide it at revision {revision!r}: "
                                 f"{first}") from None
    return Path(folder), revision
