"""What the corpus recipes share besides the manifest (`modeling_crab.manifest` defines, reads and writes it):
the problems report, the summary, label counts, attribute ratings and the command-line wrapper.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..attributes import to_attribute_scale
from ..manifest import ManifestError, format_value, write_atomically, write_manifest

PROBLEM_COLUMNS: tuple[str, ...] = ("id", "split", "kind", "detail")
BAD_ATTRIBUTE = "bad_attribute"  # the problem kind of a rating that leaves its attribute cell empty


class RecipeError(Exception):
    """A user-facing error (wrong folder, missing file, missing tool); the CLIs print it without a traceback."""


@dataclass
class Problem:
    """One utterance (or input line) a converter could not use, written to ``problems.csv``."""

    id: str
    split: str
    kind: str
    detail: str = ""


def require_dir(path: str | os.PathLike, message: str) -> Path:
    """Return ``path`` if it is a folder, else raise :class:`RecipeError` with ``message``."""
    path = Path(path)
    if not path.is_dir():
        raise RecipeError(message)
    return path


def require_file(path: str | os.PathLike, message: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`RecipeError` with ``message``."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(message)
    return path


def normalize_gender(value: str | None) -> str:
    """``female``/``male`` from the spellings the corpora use (F, M, Female, male, ...); else empty."""
    value = (value or "").strip().lower()
    if value in ("f", "female", "woman"):
        return "female"
    if value in ("m", "male", "man"):
        return "male"
    return ""


def attribute_cells(
    ratings: Mapping[str, tuple[str, str | None]], scale: tuple[float, float], *, uid: str, split: str, where: str
) -> tuple[dict[str, float | None], list[Problem]]:
    """One row's attribute columns from a corpus's own ratings. `ratings` maps each attribute column to the
    corpus's name for the rating and its text (``{"arousal": ("EmoAct", "4.2")}``); `scale` is the corpus's
    ``(low, high)``. A rating maps onto `ATTRIBUTE_RANGE` with `to_attribute_scale`, rounded to 6 decimals. An
    empty rating, one that is not a number, or one outside the scale leaves its cell empty (``None``) and becomes a
    `BAD_ATTRIBUTE` problem at `where` (the file and line) that says the fix; the row itself stays usable."""
    low, high = scale
    cells: dict[str, float | None] = {}
    problems: list[Problem] = []
    for attribute, (name, text) in ratings.items():
        text = (text or "").strip()
        try:
            rating = float(text)
        except ValueError:
            rating = math.nan
        if low <= rating <= high:
            cells[attribute] = round(to_attribute_scale(rating, low, high), 6)
            continue
        cells[attribute] = None
        if not text:
            reason = f"{name} is empty"
        elif not math.isfinite(rating):
            reason = f"{name} {text!r} is not a number"
        else:
            reason = f"{name} {text} is outside {low:g}-{high:g}"
        detail = (
            f"{where}: {reason}, so {attribute} is left empty (the row is kept); "
            f"give a rating from {low:g} to {high:g} there"
        )
        problems.append(Problem(uid, split, BAD_ATTRIBUTE, detail))
    return cells, problems


def write_problems(problems: Iterable[Problem], path: str | os.PathLike) -> Path:
    """Write problems as CSV with the columns ``id,split,kind,detail`` (a header only if there are none)."""
    path = Path(path)
    records = [asdict(problem) for problem in problems]

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=list(PROBLEM_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({key: format_value(value) for key, value in record.items()})

    write_atomically(path, write)
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)

    def write(handle: Any) -> None:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")

    write_atomically(path, write)
    return path


def label_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{split: {label: count}}`` over ``rows`` (empty labels are counted as ``""``)."""
    counts: dict[str, Counter] = {}
    for row in rows:
        counts.setdefault(str(row["split"]), Counter())[str(row.get("label") or "")] += 1
    return {split: dict(sorted(counter.items())) for split, counter in counts.items()}


def format_counts(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[str], splits: Sequence[str] | None = None
) -> str:
    """A plain-text table of utterance counts per label (rows) and split (columns)."""
    counts = label_counts(rows)
    if splits is None:
        splits = list(counts)
    names = list(labels)
    if any("" in counts.get(split, {}) for split in splits):
        names.append("")
    header = ["label", *splits, "total"]
    table = []
    for name in names:
        values = [counts.get(split, {}).get(name, 0) for split in splits]
        table.append([name or "(hidden)", *map(str, values), str(sum(values))])
    totals = [sum(counts.get(split, {}).values()) for split in splits]
    table.append(["total", *map(str, totals), str(sum(totals))])
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *table]]
    return "\n".join(lines)


def write_outputs(corpus: str, args: argparse.Namespace, result: Any, **summary: Any) -> tuple[Path, Counter]:
    """One conversion's `manifest`, `problems.csv` and `summary.json` (`summary` adds corpus-specific fields);
    refuses a conversion that found nothing usable. `args` are `converter_parser`'s (`root`, `out`,
    `manifest_name`); `result` holds the conversion's `rows` and `problems`. Returns the manifest path and the
    problem counts by kind."""
    root, out_dir, manifest_name = args.root, Path(args.out), args.manifest_name
    rows, problems = result.rows, result.problems
    if not rows:
        raise RecipeError(f"no usable {corpus} utterances found under '{root}' (see {out_dir / 'problems.csv'})")
    manifest = write_manifest(rows, out_dir / manifest_name)
    write_problems(problems, out_dir / "problems.csv")
    problem_kinds = Counter(problem.kind for problem in problems)
    header = {
        "corpus": corpus,
        "root": str(Path(root).resolve()),
        "manifest": str(manifest),
        "num_utterances": len(rows),
    }
    write_json({**header, **summary, "problems": dict(sorted(problem_kinds.items()))}, out_dir / "summary.json")
    print(f"wrote {manifest} ({len(rows)} utterances)")
    return manifest, problem_kinds


def print_problems(problem_kinds: Counter, out_dir: Path) -> None:
    if problem_kinds:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(problem_kinds.items()))
        print(f"problems ({sum(problem_kinds.values())}, see {out_dir / 'problems.csv'}): {kinds}")


def converter_parser(
    corpus: str, description: str, root_help: str, out_help: str = "manifest.csv, problems.csv, summary.json"
) -> argparse.ArgumentParser:
    """The command line every corpus converter starts from: `--root` (the release), `--out`, `--manifest-name`."""
    parser = argparse.ArgumentParser(prog=f"python -m modeling_crab.recipes.{corpus}", description=description)
    parser.add_argument("--root", required=True, help=root_help)
    parser.add_argument("--out", required=True, help=f"output folder for {out_help}")
    parser.add_argument("--manifest-name", default="manifest.csv", help="manifest file name (.csv or .jsonl)")
    return parser


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a recipe ``main``; print a :class:`RecipeError` or `ManifestError` as ``error: ...`` and return 2."""
    try:
        return int(main(argv) or 0)
    except (RecipeError, ManifestError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
