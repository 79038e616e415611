"""Models and datasets by hub id, through huggingface_hub's `snapshot_download`: resumable downloads with progress
bars, a token from HF_TOKEN or `hf auth login`, another hub (or a mirror) through HF_ENDPOINT, and a local cache
that is read when the hub cannot be reached. The commit a revision resolved to is the snapshot folder's name; the
run records it (`sources.json`), so a run can be repeated on the same files.

Offline (`--offline`, or HF_HUB_OFFLINE=1): only the cache is read, and a repo that is not there is one error that
says how to fetch it.
"""
from __future__ import annotations

import re
from pathlib import Path

from weitiao.errors import ModelNotFoundError

# a hub id: owner/name, each part letters, digits, '-', '_' or '.'
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a model needs: config, weights (safetensors; pickle only when converting deliberately), tokenizer, template
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.py"]
PICKLE_FILES = ["*.bin", "*.pt", "*.pth"]


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def snapshot(repo_id: str, kind: str, revision: str | None, field: str, patterns: list[str] | None = None
             ) -> tuple[Path, str]:
    """(local folder, commit) of `repo_id` (`kind`: model or dataset) at `revision`, downloaded when needed."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{field}: {repo_id!r}"
    try:
        folder = snapshot_download(repo_id, repo_type=kind, revision=revision, allow_patterns=patterns)
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
    return Path(folder), Path(folder).name
