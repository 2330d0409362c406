"""`python -m hub_sync push|pull|verify`: publish, fetch and check Neuroscope datasets on the Hugging Face Hub.

Errors print one line to stderr and exit 1 (2 for bad usage, as argparse does); no tracebacks.
"""

from __future__ import annotations

import argparse
import sys

from hub_sync.publish import PublishError, describe, hub_errors, pull, push
from hub_sync.verify import verify_dataset

EPILOG = """\
The token comes from HF_TOKEN or `hf auth login`, as huggingface_hub resolves it. --endpoint (or HF_ENDPOINT)
points at another Hub-compatible server. Examples:
  python -m hub_sync verify ./gpt2-neurons
  python -m hub_sync push ./gpt2-neurons my-org/gpt2-neurons --message "Harvest on 1M tokens"
  python -m hub_sync pull my-org/gpt2-neurons ./gpt2-neurons --revision main
  python -m hub_sync verify my-org/gpt2-neurons
"""

REPO_ID_HELP = "dataset repo id, e.g. my-org/gpt2-neurons"
ENDPOINT_HELP = "Hub URL (default: HF_ENDPOINT or https://huggingface.co)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hub_sync",
        description="Publish, fetch and verify Neuroscope datasets (one per model) on the Hugging Face Hub.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{push,pull,verify}")

    push_parser = commands.add_parser(
        "push",
        help="verify a dataset folder, refresh its card and publish it as one commit",
        description="Verify DIR, refresh its README.md card for REPO_ID, and publish it as ONE commit to the "
        "dataset repo (created if missing). A broken folder is refused and nothing is uploaded; unchanged "
        "data makes no commit. Prints the commit sha.",
    )
    push_parser.add_argument("dir", metavar="DIR", help="dataset folder (README.md, neuroscope.json, data/)")
    push_parser.add_argument("repo_id", metavar="REPO_ID", help=REPO_ID_HELP)
    push_parser.add_argument("--private", action="store_true", help="create the repo private (if it is new)")
    push_parser.add_argument("--revision", help="branch to commit to (created from main if missing; default main)")
    push_parser.add_argument("--message", help="commit message (default: names the model and layer count)")
    push_parser.add_argument("--endpoint", help=ENDPOINT_HELP)

    pull_parser = commands.add_parser(
        "pull",
        help="download a dataset repo into a folder at one commit",
        description="Download REPO_ID into DIR at one commit: the revision is pinned to its sha first, so "
        "every file comes from the same commit. Prints the sha.",
    )
    pull_parser.add_argument("repo_id", metavar="REPO_ID", help=REPO_ID_HELP)
    pull_parser.add_argument("dir", metavar="DIR", help="folder to download into")
    pull_parser.add_argument("--revision", help="branch, tag or commit sha (default: main)")
    pull_parser.add_argument("--endpoint", help=ENDPOINT_HELP)

    verify_parser = commands.add_parser(
        "verify",
        help="check a dataset folder or Hub repo against the format; list every problem",
        description="Check schema, format version, manifest against files, every neuron present once per "
        "kind, sort order and row groups. Exits 1 and lists the problems if there are any.",
    )
    verify_parser.add_argument(
        "source", metavar="DIR_OR_REPO", help="a local folder, org/name, or hf://datasets/org/name@revision"
    )
    verify_parser.add_argument("--endpoint", help=ENDPOINT_HELP)
    return parser


def run_push(args: argparse.Namespace) -> int:
    sha = push(
        args.dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        message=args.message,
        endpoint=args.endpoint,
    )
    print(f"{args.repo_id}: committed {sha}" if sha else f"{args.repo_id}: unchanged, no commit made")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    sha = pull(args.repo_id, args.dir, revision=args.revision, endpoint=args.endpoint)
    print(f"{args.repo_id}@{sha} -> {args.dir}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    with hub_errors(f"Verifying {args.source}"):
        problems = verify_dataset(args.source, endpoint=args.endpoint)
    if not problems:
        print(f"{args.source}: valid Neuroscope dataset")
        return 0
    print(f"{args.source}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(f"- {problem}", file=sys.stderr)
    return 1


COMMANDS = {"push": run_push, "pull": run_pull, "verify": run_verify}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        for problem in error.problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (a push is one commit: the repo holds all of it or none of it)", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, never a traceback in the user's face
        print(f"error: {type(error).__name__}: {describe(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
