"""Publish a trained Crab model: the inference export (no CSL legs), a model card with its results, the Inference
Endpoints handler, and optionally a Gradio demo Space.

    python push_to_hub.py outputs/iemocap --repo-id you/crab-iemocap --dataset iemocap
    python push_to_hub.py outputs/iemocap --repo-id you/crab-iemocap --dataset iemocap --space you/crab-demo
    python push_to_hub.py outputs/demo --repo-id you/crab-demo --dataset demo   # the demo's tiny model
    python push_to_hub.py outputs/iemocap --repo-id you/crab-iemocap --onnx     # also onnx/ (fp32, int8) for CPUs
    python push_to_hub.py outputs/demo --repo-id you/crab-demo --dataset demo --space you/crab-space \\
        --dry-run preview/   # writes the model repo to preview/model/, the Space to preview/space/; uploads nothing

OUTPUT_DIR is train.py's --output_dir (holding inference/ and eval_results.json). Log in first (`hf auth login`) or
set HF_TOKEN. An upload first writes what it sends to OUTPUT_DIR/hub_upload/model/ (and, with --space,
OUTPUT_DIR/hub_upload/space/); those folders are replaced by the next upload and kept after this one, so a failed
upload can be sent again from them. --dry-run DIR writes the same folders as DIR/model/ and DIR/space/ instead and
uploads nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from modeling_crab.publish import DATASETS, stage_model_repo, stage_space, upload


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="train.py's --output_dir")
    parser.add_argument("--repo-id", required=True, help="model repository, e.g. you/crab-iemocap")
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), default="generic", help="card template: the training corpus"
    )
    parser.add_argument(
        "--license",
        help="licence of the weights (default: the training data's: 'other' for the corpora, with their terms named "
        "in the card, and for a custom dataset; 'mit' for the synthetic demo)",
    )
    parser.add_argument(
        "--space",
        metavar="SPACE_ID",
        help="also push a Gradio demo Space of the model, e.g. you/crab-demo (staged in OUTPUT_DIR/hub_upload/space/, "
        "or DIR/space/ with --dry-run)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also export onnx/model.onnx and its int8 version into the model repo (needs the onnx extra)",
    )
    parser.add_argument("--private", action="store_true", help="create private repositories")
    parser.add_argument("--token", help="Hub token (default: the logged-in one, or HF_TOKEN)")
    parser.add_argument(
        "--dry-run",
        type=Path,
        metavar="DIR",
        help="write the model repo to DIR/model/ (and, with --space, the Space to DIR/space/) and upload nothing; "
        "DIR must be new or empty",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    staging = args.dry_run or args.output_dir / "hub_upload"
    if args.dry_run and args.dry_run.exists() and any(args.dry_run.iterdir()):
        sys.exit(f"push_to_hub.py: --dry-run folder '{args.dry_run}' is not empty; pass a new or empty folder")
    if not args.dry_run and staging.exists():
        shutil.rmtree(staging)  # our own staging area from an earlier run
    try:
        model_dir = stage_model_repo(
            args.output_dir, staging / "model", args.repo_id, args.dataset, args.license, onnx=args.onnx
        )
        space_dir = stage_space(staging / "space", args.repo_id, model_dir=model_dir) if args.space else None
    except (OSError, ValueError) as error:
        sys.exit(f"push_to_hub.py: {error}")
    except ImportError as error:
        sys.exit(f"push_to_hub.py: --onnx needs the onnx extra ({error}); pip install 'crab-ser[onnx]'")
    if args.dry_run:
        print(f"dry run, nothing uploaded: the model repo {args.repo_id} would receive the files in '{model_dir}'")
        if space_dir:
            print(f"  the Space {args.space} would receive the files in '{space_dir}'")
        return 0

    targets = [(model_dir, args.repo_id, "model")] + ([(space_dir, args.space, "space")] if space_dir else [])
    for folder, repo_id, repo_type in targets:
        try:
            commit = upload(folder, repo_id, repo_type, private=args.private, token=args.token)
        except Exception as error:  # offline, no token, no permission: keep the export and say how to finish
            sys.exit(
                f"push_to_hub.py: could not upload to the {repo_type} repo '{repo_id}' ({type(error).__name__}: "
                f"{error}).\nThe export is kept in '{folder}'. Check the network and your login (`hf auth login` "
                f"or HF_TOKEN), then rerun, or upload it with `hf upload {repo_id} {folder} --repo-type {repo_type}`."
            )
        print(f"{repo_type} {repo_id}: {commit.commit_url} (sent from '{folder}')")
        if repo_type == "model":
            print(f'  users can pin this version with revision="{commit.oid}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
