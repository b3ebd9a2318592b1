"""The Hugging Face Hub end of sharing a run: whether a push can happen at all (a token, the Hub
reachable), the card's metadata checked as the Hub reads it, and the upload as one commit.

Torch-free, so `peft-food-push` and `peft-food-train hub.push=true` refuse in one line, before any
model loads or any training starts, when there is no token or no Hub. What is pushed is built by
saved/sharing.py into a local folder; this module only checks and uploads that folder.

The token is huggingface_hub's own (`get_token`: HF_TOKEN, else the file `hf auth login` wrote);
it is passed to the Hub calls and never written to a config, a record, a log or the staged folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from peft_food.errors import UserError, first_line

# The Hub's values for `base_model_relation` (hub-docs, model-cards.md: "adapter", "merge",
# "quantized", "finetune"); the Hub infers one when it is absent, sometimes wrongly for an adapter.
RELATIONS = ("adapter", "merge", "quantized", "finetune")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
NO_TOKEN = (
    "no Hugging Face token: set HF_TOKEN or run `hf auth login` with a token that can write to the repo "
    "(--dry-run, or hub.dry_run=true, builds what would be pushed without one)"
)


def offline() -> str | None:
    """What keeps this process off the Hub (HF_HUB_OFFLINE set by the user, or by cli/hub.py's probe
    when the Hub did not answer), or None."""
    from huggingface_hub import constants

    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={os.environ[name]}"
    return "HF_HUB_OFFLINE (set when the process started)" if constants.HF_HUB_OFFLINE else None


def require_token() -> str:
    """The user's token, or one line saying how to give one. Reads no network."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError(NO_TOKEN)
    return token


LATER = "push once the Hub is reachable: peft-food-push <run dir> <user>/<repo>"
TRAIN_LATER = "train without hub.push and push the finished run with peft-food-push <run dir> <user>/<repo>"


def require_online(*, later: str = LATER) -> None:
    """One line when this process may not reach the Hub, before anything is built or created.
    `later`: how to push once it is reachable."""
    reason = offline()
    if reason is not None:
        where = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise UserError(f"cannot push: {reason}: the Hub at {where} is off for this process or did not answer; {later}")


def read_metadata(card: Path) -> dict:
    """The card's metadata as the Hub reads it, checked locally with huggingface_hub's own parser.

    `RepoCard.validate` posts the card to the Hub (/api/validate-yaml), so it runs only in `upload`.
    Offline this checks what huggingface_hub itself checks when it reads a card: the YAML block found
    with the Hub's own regex (`ModelCard.load`), `ModelCardData` built from it, the model-index read
    back into EvalResults (`model_index_to_eval_results`, through ModelCardData) and written again
    unchanged; plus the fields a model page needs: library_name, pipeline_tag, a valid base_model
    repo id with a known base_model_relation, and the split of every result named."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = card.read_text()
    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        raise UserError(f"{card} has no metadata block (--- YAML ---) for the Hub to read")
    written = yaml.safe_load(match.group(2)) or {}
    try:
        data = ModelCard.load(str(card)).data
    except ValueError as err:
        raise UserError(f"{card}: huggingface_hub cannot read its metadata: {first_line(err)}") from None
    problems = []
    if data.to_dict() != written:
        problems.append("its metadata does not survive huggingface_hub's round trip")
    for key in ("library_name", "pipeline_tag"):
        if not data.get(key):
            problems.append(f"no {key}")
    if data.get("base_model"):
        try:
            validate_repo_id(data.base_model)
        except HFValidationError as err:
            problems.append(f"base_model is not a Hub repo id ({first_line(err)})")
        if data.get("base_model_relation") not in RELATIONS:
            problems.append(f"base_model_relation must be one of {', '.join(RELATIONS)}")
    elif data.get("base_model_relation"):
        problems.append("base_model_relation without a base_model")
    for result in data.eval_results or []:
        if not result.dataset_split:
            problems.append(f"the {result.metric_type} result names no dataset split")
        if not isinstance(result.metric_value, (int, float)):
            problems.append(f"the {result.metric_type} result is not a number")
    if problems:
        raise UserError(f"{card}: the Hub's metadata is not right: {'; '.join(problems)}")
    return written


def upload(
    folder: Path, *, repo_id: str, token: str, private: bool = False, revision: str | None = None, message: str
) -> str:
    """Create the repo if needed and commit every file of `folder` to it in one commit (create_commit:
    upload_folder may split a large folder into several commits where hf_xet is installed). The card
    is validated by the Hub first, so a card the Hub rejects creates nothing. Returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        ModelCard.load(str(folder / "README.md")).validate()  # the Hub's own validation (a POST)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        ]
        commit = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        hint = {
            401: "the token was refused: run `hf auth login` again or set a valid HF_TOKEN",
            403: f"the token cannot write to {repo_id}: use a token with write access to it",
        }.get(status, "nothing was committed; the same command pushes it again")
        raise UserError(f"the Hub refused the push to {repo_id} ({first_line(err)}): {hint}") from None
    except ValueError as err:  # the Hub's card validation (400)
        raise UserError(f"the Hub rejected the model card: {first_line(err)}; nothing was committed") from None
    except Exception as err:
        if not _network_error(err):
            raise
        raise UserError(
            f"the push to {repo_id} failed ({type(err).__name__}: {first_line(err)}): nothing was committed; "
            f"the same command pushes it again"
        ) from None
    return commit.commit_url


def _network_error(err: BaseException) -> bool:
    """A connection that failed or timed out midway: an OSError, or the HTTP client's own transport
    error (huggingface_hub's client raises httpx's, which are not OSErrors)."""
    roots = {cls.__module__.split(".")[0] for cls in type(err).__mro__}
    return isinstance(err, OSError) or bool(roots & {"httpx", "httpx2", "requests", "urllib3"})


def downloaded(repo_id: str) -> Path:
    """A pushed repo (`peft-food-push`) in the local Hub cache, downloaded if it is not there yet:
    what `peft-food-predict <user>/<repo>` reads. Offline, only a cached copy; otherwise one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id))
    except LocalEntryNotFoundError:
        why = offline() or "the Hub did not answer"
        raise UserError(
            f"{repo_id} is not a local dir, and the Hub repo of that name is not in the cache ({why}): "
            f"pass a run dir, or download the repo once where the Hub is reachable"
        ) from None
    except (HfHubHTTPError, HFValidationError) as err:
        raise UserError(
            f"{repo_id} is not a local dir, and the Hub repo of that name cannot be read ({first_line(err)}): "
            f"pass a run dir, or a repo id you can read (private repos need HF_TOKEN or `hf auth login`)"
        ) from None
