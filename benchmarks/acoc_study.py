"""Run the ACOC growth study (the `acoc` stage's arms) at chosen settings and write its figures as JSON.

The stage's code path (`pipeline.acoc.run` + `acoc_outputs.study_figures`) on prepare's corpus in `data/`,
with the models written to a temporary folder. Prints the arms and the bars; never passes or fails on them.

    PYTHONPATH=src python benchmarks/acoc_study.py --budget 4000 --seeds 0,1,2 --arms S,L,G \\
        [--ablations penalty,soup] [--workers 2] [--set study.target_fraction=0.6] --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import yaml

from cascadelab.config import ACOCParams, load_params
from cascadelab.pipeline import acoc
from cascadelab.pipeline.acoc_outputs import study_figures
from cascadelab.pipeline.paths import PATHS


def _settings(args: argparse.Namespace) -> ACOCParams:
    """params.yaml's acoc section with the command line's settings."""
    raw = load_params(Path("params.yaml")).acoc.model_dump()
    raw["seeds"] = [int(s) for s in args.seeds.split(",")]
    study = raw["study"]
    study.update(budget_large_steps=args.budget, arms=args.arms.split(","), workers=args.workers)
    study["ablations"] = args.ablations.split(",") if args.ablations else []
    for item in args.set:
        key, value = item.split("=", 1)
        *path, leaf = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return ACOCParams.model_validate(raw)


def main() -> None:
    """Run the study and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1500, help="acoc.study.budget_large_steps")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--arms", default="S,L,G,A")
    parser.add_argument("--ablations", default="")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="another acoc setting, dotted: growth.x=1")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    settings = _settings(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataclasses.replace(PATHS, acoc=Path(tmp) / "acoc", acoc_baselines=Path(tmp) / "baselines")
        outcome = acoc.run(settings, paths)
    figures = study_figures(settings, outcome.runs, outcome.flops)
    figures["command"] = " ".join(["benchmarks/acoc_study.py", *[f"--{k}={v}" for k, v in vars(args).items()]])
    figures["wall_seconds"] = time.perf_counter() - started
    figures["curves"] = {f"{arm}/{seed}": run.curve for (arm, seed), run in sorted(outcome.runs.items())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    for arm, row in figures["arms"].items():
        print(arm, {k: v for k, v in row.items() if not isinstance(v, dict)})
    print("bars", json.dumps(figures.get("bars", {}), default=str))
    print("ablations", json.dumps(figures.get("ablations", {}), default=str))


if __name__ == "__main__":
    main()
