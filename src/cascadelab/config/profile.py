"""Named params profiles (`profiles/<name>.yaml`): overrides on params.yaml, validated, turned into `dvc exp run -S`.

A profile changes sizes and switches (the GPU profile: wider models, larger batches, bf16), never code,
so a profile run is a DVC experiment like any sweep: `dvc exp run -n <name> -S key=value ...`.

    PYTHONPATH=src python -m cascadelab.config.profile gpu            # print the -S arguments
    PYTHONPATH=src python -m cascadelab.config.profile gpu --check    # validate only
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from cascadelab.config.params import Params, ParamsError, parse_params, read_sections

PROFILES_DIR = Path("profiles")


def profile_path(name: str, folder: Path = PROFILES_DIR) -> Path:
    """The file of profile `name`; ParamsError naming the known profiles if there is none."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ParamsError(f"{path}: no such profile (known: {', '.join(known) or 'none'})")
    return path


def flatten_overrides(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key → value for every leaf of the overrides (a mapping value is walked, a list is a leaf)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_overrides(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply_overrides(base: dict[str, Any], flat: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of `base` with each dotted override set; a key params.yaml lacks is an error (a typo is not a new key)."""
    merged = copy.deepcopy(base)
    for dotted, value in flat.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"{source}: {dotted}: params.yaml has no section {part!r} there")
            node = node[part]
        if leaf not in node:
            raise ParamsError(f"{source}: {dotted}: not a key of params.yaml (set it there first, then override it)")
        node[leaf] = value
    return merged


def load_profile(
    name: str, params_path: Path = Path("params.yaml"), folder: Path = PROFILES_DIR
) -> tuple[dict[str, Any], Params]:
    """The profile's flat overrides and the validated params they give on top of params.yaml."""
    path = profile_path(name, folder)
    flat = flatten_overrides(read_sections(path))
    base = read_sections(params_path)
    merged = apply_overrides(base, flat, str(path))
    return flat, parse_params(merged, source=f"{params_path} + {path}")


def set_arguments(flat: dict[str, Any]) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` (values in JSON, which DVC's override grammar reads)."""
    args: list[str] = []
    for key, value in flat.items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args


def main(argv: list[str] | None = None) -> None:
    """Print a profile's `dvc exp run -S` arguments (or only validate it with --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="profile name: profiles/<name>.yaml")
    parser.add_argument("--check", action="store_true", help="validate only; print nothing on success")
    args = parser.parse_args(argv)
    try:
        flat, _ = load_profile(args.name)
    except ParamsError as error:
        sys.exit(f"error: {error}")
    if not args.check:
        print(" ".join(set_arguments(flat)))


if __name__ == "__main__":
    main()
