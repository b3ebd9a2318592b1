"""Push a finished run to the Hugging Face Hub, in one commit (saved/sharing.py, saved/hub.py).

peft-food-push outputs/2026-11-22/10-00-00 <user>/food-vit-lora              # the adapter: a peft repo
peft-food-push outputs/2026-11-22/10-00-00 <user>/food-vit --merged          # pipeline() loads it
peft-food-push outputs/2026-11-22/10-00-00 <user>/food-vit-lora --dry-run    # what would be pushed
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from peft_food.cli import add_trust_flag, exit_with, one_line_errors
from peft_food.cli.hub import go_offline, offline_unless_reachable
from peft_food.errors import UserError

PROG = "peft-food-push"


def say(note: str) -> None:
    print(f"{PROG}: {note}", file=sys.stderr)


@one_line_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a completed run dir (outputs/<date>/<time>)")
    parser.add_argument("repo_id", help="the Hub repo to push to: <user or org>/<name> (created if missing)")
    parser.add_argument(
        "--merged", action="store_true", help="push the merged plain transformers model, not the peft adapter"
    )
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="the branch to commit to (made from main if missing; default main)")
    parser.add_argument(
        "--dry-run", action="store_true", help="build and list what would be pushed (files, card metadata); no network"
    )
    parser.add_argument("--staging", type=Path, help="build the folder to push here and keep it (default: a temp dir)")
    add_trust_flag(parser)
    args = parser.parse_args(argv)
    # Everything that needs neither torch nor the network first: a mistake costs no time.
    from peft_food.config import check_repo_id
    from peft_food.saved.hub import require_online, require_token

    check_repo_id(args.repo_id, key="repo_id")
    if not args.run.exists():
        raise UserError(f"{args.run} does not exist: pass a completed run dir (outputs/<date>/<time>)")
    if args.dry_run:
        go_offline()  # touches no network: a base that is not cached fails in one line
        return _dry_run(args)
    require_token()
    offline_unless_reachable()  # one connection attempt; no Hub: HF_HUB_OFFLINE=1, refused next
    require_online()
    from peft_food.saved.sharing import push  # torch loads once the push can happen

    url = push(
        args.run,
        repo_id=args.repo_id,
        merged=args.merged,
        private=args.private,
        revision=args.revision,
        staging=args.staging,
        trust_remote_code=args.trust_remote_code,
        say=say,
    )
    print(f"pushed {args.run} to https://huggingface.co/{args.repo_id} in one commit: {url}")
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    from peft_food.saved.sharing import stage

    with tempfile.TemporaryDirectory(prefix="peft-food-push-") as scratch:
        staged = stage(
            args.run,
            args.staging or Path(scratch) / "repo",
            repo_id=args.repo_id,
            merged=args.merged,
            trust_remote_code=args.trust_remote_code,
            say=say,
        )
        print(staged.describe())
    kept = f"; the folder is kept in {args.staging}" if args.staging else ""
    print(f"nothing pushed (--dry-run){kept}")
    return 0


def cli() -> None:
    exit_with(main)
