"""5-fold leave-one-session-out (LOSO) cross-validation driver for IEMOCAP.

Usage::

    python -m modeling_crab.recipes.iemocap_loso --manifest data/iemocap/manifest.csv --out runs/iemocap_loso \\
        --config configs/iemocap.json [--dev-from-train] [--dry-run] [-- extra train.py args]

Fold ``k`` (k = 1..5) holds out session ``k``:

- default: the held-out session's two speakers are split by gender -- its female speaker
  (``Ses0kF``) is ``dev`` and its male speaker (``Ses0kM``) is ``test`` (``--dev-gender M`` swaps them);
  the other four sessions are ``train``. No speaker is in two splits of the same fold.
- ``--dev-from-train``: the whole held-out session is ``test``; ``dev`` is one speaker (by
  ``--dev-gender``) of the next session (k+1, wrapping 5 -> 1), which is removed from ``train``. Train
  then has three sessions plus one speaker, so this is still speaker-independent.

For each fold the driver writes ``DIR/manifests/fold{k}.csv`` (audio paths made absolute, or relative
to that folder), then runs ``python train.py <config> --manifest <fold manifest> --output_dir DIR/fold{k}``
as a subprocess (``--dry-run`` only writes the manifests and prints the commands). Finally it reads every
``DIR/fold{k}/eval_results.json`` (keys ``test_war``/``test_uar``, falling back to ``eval_war``/``eval_uar``)
and writes per-fold and mean WAR/UAR to ``DIR/loso_results.json`` and ``DIR/loso_results.md``
(``--aggregate-only`` does just this last step).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import read_manifest, relative_audio_path, resolve_audio_path, write_manifest
from .common import RecipeError, run_cli, write_json

_SPEAKER_RE = re.compile(r"^Ses(?P<session>\d{2})(?P<gender>[FM])$")
_UTTERANCE_RE = re.compile(r"^Ses(?P<session>\d{2})[FM]_.+_(?P<gender>[FM])[0-9A-Za-z]+$")


@dataclass
class Fold:
    """One LOSO fold: ``rows`` are copies of the manifest rows with ``split`` set for this fold."""

    index: int
    held_out_session: int
    rows: list[dict] = field(default_factory=list)
    train_speakers: list[str] = field(default_factory=list)
    dev_speakers: list[str] = field(default_factory=list)
    test_speakers: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(row["split"] for row in self.rows))


def speaker_of(row: Mapping[str, str]) -> str:
    """The IEMOCAP speaker (``Ses01F`` ...) of a manifest row: its ``speaker`` column, else derived from its id."""
    speaker = str(row.get("speaker") or "").strip()
    if _SPEAKER_RE.match(speaker):
        return speaker
    match = _UTTERANCE_RE.match(str(row.get("id") or ""))
    if match:
        return f"Ses{match['session']}{match['gender']}"
    raise RecipeError(
        f"cannot tell the IEMOCAP speaker of manifest row id={row.get('id')!r} speaker={row.get('speaker')!r}; "
        "expected a speaker like 'Ses01F' or an utterance id like 'Ses01F_impro01_M003'"
    )


def session_of(row: Mapping[str, str]) -> int:
    """The IEMOCAP session (1..5) of a manifest row: its ``session`` column, else from its speaker."""
    session = str(row.get("session") or "").strip()
    if session.isdigit():
        return int(session)
    return int(speaker_of(row)[3:5])


def split_for_fold(
    session: int,
    speaker: str,
    held_out: int,
    *,
    sessions: Sequence[int] = (1, 2, 3, 4, 5),
    dev_gender: str = "F",
    dev_from_train: bool = False,
) -> str:
    """The split (``train``/``dev``/``test``) of a speaker's utterances in the fold that holds out ``held_out``."""
    gender = speaker[-1]
    if session == held_out:
        if dev_from_train:
            return "test"
        return "dev" if gender == dev_gender else "test"
    if dev_from_train:
        ordered = sorted(sessions)
        next_session = ordered[(ordered.index(held_out) + 1) % len(ordered)]
        if session == next_session and gender == dev_gender:
            return "dev"
    return "train"


def loso_folds(
    manifest_rows: Sequence[Mapping[str, str]],
    *,
    dev_from_train: bool = False,
    dev_gender: str = "F",
) -> list[Fold]:
    """Build the leave-one-session-out folds (one per session present, 5 for the full corpus).

    Every row appears in every fold, with ``split`` rewritten for that fold (see the module docstring).
    """
    dev_gender = dev_gender.upper()
    if dev_gender not in ("F", "M"):
        raise ValueError(f"dev_gender must be 'F' or 'M', not {dev_gender!r}")
    annotated = [(dict(row), session_of(row), speaker_of(row)) for row in manifest_rows]
    sessions = sorted({session for _, session, _ in annotated})
    if len(sessions) < 2:
        raise RecipeError(f"leave-one-session-out needs at least two sessions; the manifest has {sessions}")
    folds = []
    for held_out in sessions:
        fold = Fold(index=held_out, held_out_session=held_out)
        by_split: dict[str, set[str]] = {"train": set(), "dev": set(), "test": set()}
        for row, session, speaker in annotated:
            split = split_for_fold(
                session, speaker, held_out, sessions=sessions, dev_gender=dev_gender, dev_from_train=dev_from_train
            )
            new_row = dict(row)
            new_row["split"] = split
            new_row["speaker"] = speaker
            new_row["session"] = str(session)
            fold.rows.append(new_row)
            by_split[split].add(speaker)
        fold.train_speakers = sorted(by_split["train"])
        fold.dev_speakers = sorted(by_split["dev"])
        fold.test_speakers = sorted(by_split["test"])
        folds.append(fold)
    return folds


def write_fold_manifests(
    folds: Sequence[Fold], source_manifest: str | Path, out_dir: str | Path, *, suffix: str = ".csv"
) -> dict[int, Path]:
    """Write ``out_dir/manifests/fold{k}.csv`` for every fold, re-basing relative audio paths."""
    source_dir = Path(source_manifest).resolve().parent
    manifest_dir = Path(out_dir) / "manifests"
    paths = {}
    for fold in folds:
        rows = []
        for row in fold.rows:
            new_row = dict(row)
            audio = resolve_audio_path(str(row["audio"]), source_dir)
            new_row["audio"] = relative_audio_path(audio, manifest_dir)
            rows.append(new_row)
        paths[fold.index] = write_manifest(rows, manifest_dir / f"fold{fold.index}{suffix}")
    return paths


def train_command(
    fold_manifest: Path,
    fold_output_dir: Path,
    *,
    config: str | None,
    train_script: str = "train.py",
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
) -> list[str]:
    command = [python, train_script]
    if config:
        command.append(config)
    command += ["--manifest", str(fold_manifest), "--output_dir", str(fold_output_dir)]
    command += list(extra_args)
    return command


def _metric(results: Mapping[str, object], name: str) -> tuple[float | None, str | None]:
    for prefix in ("test", "eval"):
        key = f"{prefix}_{name}"
        if key in results and results[key] is not None:
            return float(results[key]), key
    return None, None


def aggregate_loso(out_dir: str | Path, folds: Sequence[int] = (1, 2, 3, 4, 5)) -> dict:
    """Read ``out_dir/fold{k}/eval_results.json`` for each fold and compute mean (and std) WAR/UAR.

    Uses ``test_war``/``test_uar`` when present, else ``eval_war``/``eval_uar``. Folds without a results
    file (or without the metrics) are listed under ``missing`` and left out of the mean.
    """
    out_dir = Path(out_dir)
    per_fold = []
    missing = []
    for k in folds:
        path = out_dir / f"fold{k}" / "eval_results.json"
        if not path.is_file():
            missing.append({"fold": k, "reason": f"{path} not found"})
            continue
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            missing.append({"fold": k, "reason": f"{path} is not valid JSON: {error}"})
            continue
        war, war_key = _metric(results, "war")
        uar, uar_key = _metric(results, "uar")
        if war is None or uar is None:
            missing.append({"fold": k, "reason": f"{path} has no test_war/test_uar or eval_war/eval_uar"})
            continue
        per_fold.append({"fold": k, "held_out_session": k, "war": war, "uar": uar, "keys": [war_key, uar_key]})

    def stats(name: str) -> tuple[float | None, float | None]:
        values = [entry[name] for entry in per_fold]
        if not values:
            return None, None
        mean = sum(values) / len(values)
        std = math.sqrt(sum((value - mean) ** 2 for value in values) / len(values))
        return mean, std

    war_mean, war_std = stats("war")
    uar_mean, uar_std = stats("uar")
    return {
        "folds": per_fold,
        "mean": {"war": war_mean, "uar": uar_mean},
        "std": {"war": war_std, "uar": uar_std},
        "num_folds": len(per_fold),
        "missing": missing,
    }


def results_markdown(results: Mapping) -> str:
    """A markdown table of per-fold and mean WAR/UAR."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = ["| fold | held-out session | WAR | UAR |", "|---|---|---|---|"]
    for entry in results["folds"]:
        lines.append(f"| {entry['fold']} | {entry['held_out_session']} | {fmt(entry['war'])} | {fmt(entry['uar'])} |")
    for entry in results["missing"]:
        lines.append(f"| {entry['fold']} | {entry['fold']} | missing | missing |")
    mean, std = results["mean"], results["std"]
    lines.append(f"| **mean** ({results['num_folds']} folds) | | **{fmt(mean['war'])}** | **{fmt(mean['uar'])}** |")
    lines.append(f"| std | | {fmt(std['war'])} | {fmt(std['uar'])} |")
    return "\n".join(lines) + "\n"


def write_loso_results(out_dir: str | Path, folds: Sequence[int] = (1, 2, 3, 4, 5)) -> dict:
    """Aggregate, then write ``loso_results.json`` and ``loso_results.md`` in ``out_dir``."""
    out_dir = Path(out_dir)
    results = aggregate_loso(out_dir, folds)
    write_json(results, out_dir / "loso_results.json")
    (out_dir / "loso_results.md").write_text(results_markdown(results), encoding="utf-8")
    return results


def _parse_folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise RecipeError(f"--folds must be a comma-separated list of session numbers, not {text!r}") from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_crab.recipes.iemocap_loso",
        description="IEMOCAP 5-fold leave-one-session-out: write fold manifests, train each fold, aggregate WAR/UAR.",
        epilog="Arguments after a lone '--' are passed on to train.py.",
    )
    parser.add_argument("--manifest", default=None, help="IEMOCAP manifest from modeling_crab.recipes.iemocap")
    parser.add_argument("--out", required=True, help="output folder (fold manifests, fold runs, results)")
    parser.add_argument("--config", default=None, help="train.py JSON config, e.g. configs/iemocap.json")
    parser.add_argument("--train-script", default="train.py", help="training script (default: train.py)")
    parser.add_argument("--python", default=sys.executable, help="python interpreter for the training runs")
    parser.add_argument("--dev-from-train", action="store_true", help="test = whole held-out session; dev from train")
    parser.add_argument("--dev-gender", choices=("F", "M"), default="F", help="gender of the dev speaker (default F)")
    parser.add_argument("--folds", default=None, help="comma-separated subset of folds to run, e.g. 1,3")
    parser.add_argument("--dry-run", action="store_true", help="only write the fold manifests and print commands")
    parser.add_argument("--aggregate-only", action="store_true", help="only aggregate existing eval_results.json")
    parser.add_argument("--keep-going", action="store_true", help="continue with the next fold if one fails")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.manifest is None and not args.aggregate_only:
        parser.error("--manifest is required (except with --aggregate-only)")
    out_dir = Path(args.out)
    selected = _parse_folds(args.folds)

    if args.aggregate_only:
        folds_to_read = selected or [1, 2, 3, 4, 5]
        results = write_loso_results(out_dir, folds_to_read)
        print(results_markdown(results), end="")
        return 0 if results["num_folds"] else 1

    if args.config and not Path(args.config).is_file():
        raise RecipeError(f"config '{args.config}' does not exist")
    rows = read_manifest(args.manifest)
    folds = loso_folds(rows, dev_from_train=args.dev_from_train, dev_gender=args.dev_gender)
    if selected:
        unknown = sorted(set(selected) - {fold.index for fold in folds})
        if unknown:
            raise RecipeError(f"--folds names session(s) {unknown} that are not in the manifest")
        folds = [fold for fold in folds if fold.index in selected]
    suffix = ".jsonl" if Path(args.manifest).suffix.lower() in (".jsonl", ".json") else ".csv"
    manifest_paths = write_fold_manifests(folds, args.manifest, out_dir, suffix=suffix)

    if not args.dry_run and not Path(args.train_script).is_file():
        raise RecipeError(
            f"training script '{args.train_script}' not found; run from the repository root or pass --train-script"
        )
    failures = []
    for fold in folds:
        counts = fold.counts()
        print(
            f"fold {fold.index}: held-out session {fold.held_out_session}; "
            f"train {counts.get('train', 0)} ({', '.join(fold.train_speakers)}), "
            f"dev {counts.get('dev', 0)} ({', '.join(fold.dev_speakers)}), "
            f"test {counts.get('test', 0)} ({', '.join(fold.test_speakers)})"
        )
        command = train_command(
            manifest_paths[fold.index],
            out_dir / f"fold{fold.index}",
            config=args.config,
            train_script=args.train_script,
            python=args.python,
            extra_args=extra,
        )
        print("  " + shlex.join(command), flush=True)
        if args.dry_run:
            continue
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            message = f"fold {fold.index} training failed with exit code {completed.returncode}"
            if not args.keep_going:
                raise RecipeError(message)
            print(f"warning: {message}", file=sys.stderr)
            failures.append(fold.index)

    if args.dry_run:
        print(f"dry run: wrote {len(manifest_paths)} fold manifests to {out_dir / 'manifests'}")
        return 0
    results = write_loso_results(out_dir, [fold.index for fold in folds])
    print(results_markdown(results), end="")
    print(f"wrote {out_dir / 'loso_results.json'} and {out_dir / 'loso_results.md'}")
    return 1 if failures or results["missing"] else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
