"""The hidden-eval manifest: a hash of every val/test prompt, written by `prepare`, checked by trainers.

`prepare` writes ``data/hidden_eval/manifest.json`` (``{split: [sha256 of the normalised prompt, ...]}``
for every held-out split, the corpus's and any other dataset's it generates). A trainer checks its
training prompts against it at start (:func:`check_manifest`): any overlap is a hard failure that names
the count, so a held-out prompt can never leak into training unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from cascadelab.data.corpus import normalise_prompt
from cascadelab.io import write_json

MANIFEST_NAME = "manifest.json"
HIDDEN_SPLITS = ("val", "test")


def manifest_path(corpus_dir: Path) -> Path:
    """Where `prepare` writes the manifest of the corpus at `corpus_dir`: ``<corpus_dir>/../hidden_eval/``.

    Beside the corpus rather than inside it, so adding or changing the manifest leaves the corpus's
    bytes (every stage's dependency) untouched.
    """
    return Path(corpus_dir).parent / "hidden_eval" / MANIFEST_NAME


def prompt_hash(prompt: str) -> str:
    """sha256 of the normalised prompt (the corpus's dedup key)."""
    return hashlib.sha256(normalise_prompt(prompt).encode()).hexdigest()


def write_manifest(path: Path, splits: Mapping[str, Iterable[str]]) -> Path:
    """Write the sorted hashes of every prompt of the hidden splits (e.g. val, test) to `path` atomically."""
    write_json(Path(path), {name: sorted({prompt_hash(p) for p in prompts}) for name, prompts in splits.items()})
    return Path(path)


def load_manifest(path: Path) -> set[str]:
    """Every hash in the manifest at `path`; a missing or malformed file fails naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hidden-eval manifest {path}: not found (run the prepare stage: dvc repro prepare)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return {str(h) for hashes in manifest.values() for h in hashes}
    except (json.JSONDecodeError, AttributeError, TypeError) as error:
        raise ValueError(f"hidden-eval manifest {path}: malformed ({error})") from None


def check_manifest(path: Path, train_prompts: Iterable[str]) -> int:
    """Number of manifest prompts checked; fails naming the count if any training prompt is in it."""
    hidden = load_manifest(path)
    overlap = {prompt_hash(p) for p in train_prompts} & hidden
    if overlap:
        raise ValueError(
            f"hidden-eval manifest {path}: {len(overlap)} training prompts are in the hidden val/test splits"
        )
    return len(hidden)
