"""Pushing a training run's output to the Hub, and refusing early when that cannot work.

A push that fails after hours of training loses nothing but is a bad surprise; a push that cannot work is
known before the first step, so the scripts check first.
"""

from __future__ import annotations

from pathlib import Path


def check_hub_push(token: str | None = None) -> str:
    """The token a later `push_folder` will use; raises ``ValueError`` now if there is none or the machine is
    offline (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ValueError("--push_to_hub was given but HF_HUB_OFFLINE is set: the Hub cannot be reached. Unset it, "
                         "or drop --push_to_hub and upload the output folder later.")
    token = token or get_token()
    if not token:
        raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass "
                         "--hub_token. Checked before training so that no run is lost to it.")
    return token


def push_folder(folder: str | Path, repo_id: str | None, token: str, commit_message: str) -> str:
    """Create (or reuse) the model repository and upload ``folder``; returns the repository id."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(repo_id or Path(folder).name, exist_ok=True, token=token).repo_id
    upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, token=token,
                  ignore_patterns=["checkpoint-*", "checkpoint-*/**"])
    return repo_id
