"""`make claims`: the claims' stages rerun at other training seeds as queued DVC experiments, and their files gathered.

    PYTHONPATH=src python -m cascadelab.pipeline.seed_runs queue 1 2        # one queued experiment per seed
    dvc exp run --run-all --jobs 1                                           # run them, one at a time
    PYTHONPATH=src python -m cascadelab.pipeline.seed_runs gather 1 2      # copy their files under metrics/seeds/

Each experiment `claims-seed-<N>` sets `training_seed=N` and reproduces `SEED_TARGETS`: prepare does not
list `training_seed`, so it stays cached and every seed sees the default run's corpus and test items; the
stages between prepare and the targets retrain. `gather` reads each experiment's metrics, details, timing
and per-item files from its commit (`dvc.api.read`) into `metrics/seeds/<N>/` (the same layout as the
project: `metrics/<stage>.json`, `plots/<stage>/...`; items gzipped), replacing the last gathering, and the
report decides the claims over the default run and these seeds (`report.seed_claims`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cascadelab.io import atomic_write_text, write_json
from cascadelab.pipeline.paths import PATHS, STAGES, Paths
from cascadelab.report.claims import Items, read_items
from cascadelab.report.seed_claims import SeedRun
from cascadelab.report.table import load_figures

# The stages whose claims' one-seed effects lie within twice their interval of the threshold: the cascade
# (cascade_eval and its upstream), the hybrid RNN, SIGMA (sigma_rl and sigma_pretrain). Not lego (its claim
# is far from its threshold) nor acoc (it trains its own seeds inside the stage).
SEED_TARGETS = ("cascade_eval", "hybrid_rnn", "sigma_rl")
DEFAULT_SEEDS = (1, 2)  # the Makefile's SEEDS: with the default run, three training seeds
ITEMS = "items.jsonl"
RUNS_FILE = "runs.json"  # under the seeds folder: the gathering (experiments, commits, measured wall time)

Reader = Callable[[str, str], bytes]  # (path in the repository, git revision) -> the file's bytes


def experiment_name(seed: int) -> str:
    """The queued experiment of a training seed."""
    return f"claims-seed-{seed}"


def seeded_stages(targets: Sequence[str] = SEED_TARGETS) -> tuple[str, ...]:
    """The targets and every stage upstream of them but prepare, in pipeline order: what a seed run retrains."""
    writers = {out: stage for stage, io in STAGES.items() for out in io.outs}
    needed: set[str] = set()
    todo = list(targets)
    while todo:
        stage = todo.pop()
        if stage in needed or stage == "prepare":
            continue
        needed.add(stage)
        todo += [writers[dep] for dep in STAGES[stage].deps if dep in writers]
    return tuple(stage for stage in STAGES if stage in needed)


def queue_commands(seeds: Sequence[int], targets: Sequence[str] = SEED_TARGETS) -> list[list[str]]:
    """One `dvc exp run --queue` per seed (one `-S` each: several `-S` of one key queue a single experiment)."""
    return [
        ["dvc", "exp", "run", "--queue", "-n", experiment_name(s), "-S", f"training_seed={s}", *targets] for s in seeds
    ]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def experiment_rev(seed: int, baseline: str) -> str:
    """The commit of experiment `claims-seed-<seed>` on `baseline`; ValueError naming it where there is none."""
    name = experiment_name(seed)
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    rev = _git("for-each-ref", "--format=%(objectname)", ref)
    if not rev:
        raise ValueError(f"seed_runs: no experiment {name} on commit {baseline[:7]} (queue and run it: make claims)")
    return rev


def _has_experiment(seed: int, baseline: str) -> bool:
    try:
        experiment_rev(seed, baseline)
    except ValueError:
        return False
    return True


def seed_files(stages: Sequence[str]) -> list[str]:
    """The repository paths gathered per seed: each stage's metrics, details, timing and per-item files."""
    files = []
    for stage in stages:
        files += [path.as_posix() for path in PATHS.figures_of(stage)]
        files.append((PATHS.plots_of(stage) / ITEMS).as_posix())
    return files


def gather(
    seeds: Sequence[int],
    revs: Sequence[str],
    read: Reader,
    root: Path = PATHS.seeds,
    stages: Sequence[str] | None = None,
    run_info: dict[str, Any] | None = None,
) -> list[Path]:
    """Copy each seed's files from its experiment commit (`read(path, rev)`) under `root/<seed>/`, replacing `root`.

    A stage without a per-item file is gathered without one; a missing figures file fails naming it.
    """
    stages = seeded_stages() if stages is None else stages
    for old in root.glob("*"):
        if old.is_dir() and old.name.isdigit():
            shutil.rmtree(old)
    written = []
    for seed, rev in zip(seeds, revs, strict=True):
        folder = root / str(seed)
        for path in seed_files(stages):
            try:
                data = read(path, rev)
            except FileNotFoundError:
                if path.endswith(ITEMS):
                    continue
                raise FileNotFoundError(f"seed_runs: {path} missing in {experiment_name(seed)} ({rev[:7]})") from None
            target = folder / (path + ".gz" if path.endswith(ITEMS) else path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gzip.compress(data, mtime=0) if path.endswith(ITEMS) else data)
            written.append(target)
    runs = [{"training_seed": s, "experiment": experiment_name(s), "rev": r} for s, r in zip(seeds, revs, strict=True)]
    info = {"stages": list(stages), "runs": runs, **(run_info or {})}
    write_json(root / RUNS_FILE, info)
    return [*written, root / RUNS_FILE]


def _read_items(path: Path) -> list[dict[str, Any]] | None:
    zipped = path.with_name(path.name + ".gz")
    if not zipped.is_file():
        return read_items(path)
    text = gzip.decompress(zipped.read_bytes()).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def gathered(root: Path = PATHS.seeds) -> tuple[list[SeedRun], dict[str, Any]]:
    """The seed runs gathered under `root` (none before `make claims`) and the gathering's record."""
    index = root / RUNS_FILE
    if not index.is_file():
        return [], {}
    info = json.loads(index.read_text(encoding="utf-8"))
    runs = []
    for run in info["runs"]:
        paths = Paths.under(root / str(run["training_seed"]))
        figures = load_figures(paths.figures_of, info["stages"])
        items: Items = {stage: _read_items(paths.plots_of(stage) / ITEMS) for stage in info["stages"]}
        source = f"experiment {run['experiment']} ({run['rev'][:7]})"
        runs.append(SeedRun(int(run["training_seed"]), source, figures, items))
    return runs, info


def _dvc_read(path: str, rev: str) -> bytes:
    import dvc.api  # only `gather` needs DVC's API (slow to import)
    from dvc.exceptions import PathMissingError

    try:
        return bytes(dvc.api.read(path, rev=rev, mode="rb"))
    except PathMissingError:
        raise FileNotFoundError(path) from None


def main(argv: Sequence[str] | None = None) -> int:
    """`queue SEED...` queues the experiments; `gather SEED... [--seconds S]` copies their files (module doc)."""
    parser = argparse.ArgumentParser(prog="python -m cascadelab.pipeline.seed_runs", description=__doc__)
    parser.add_argument("command", choices=("queue", "gather"))
    parser.add_argument("seeds", nargs="+", type=int, help="training seeds besides the default run's")
    parser.add_argument("--seconds", type=float, help="gather: the measured wall time of the experiments' run")
    parser.add_argument("--targets", nargs="+", default=list(SEED_TARGETS), help="the stages each experiment runs")
    args = parser.parse_args(argv)
    unknown = [target for target in args.targets if target not in STAGES]
    if unknown:
        print(f"error: seed_runs: unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})", file=sys.stderr)
        return 2
    if len(set(args.seeds)) != len(args.seeds):
        print(f"error: seed_runs: a seed is listed twice ({' '.join(map(str, args.seeds))})", file=sys.stderr)
        return 2
    try:
        if args.command == "queue":
            baseline = _git("rev-parse", "HEAD")
            earlier = [experiment_name(seed) for seed in args.seeds if _has_experiment(seed, baseline)]
            if earlier:  # a name DVC already holds on this commit would refuse the queueing
                subprocess.run(["dvc", "exp", "remove", *earlier], check=True)
            for command in queue_commands(args.seeds, args.targets):
                print(" ".join(command))
                subprocess.run(command, check=True)
            return 0
        baseline = _git("rev-parse", "HEAD")
        revs = [experiment_rev(seed, baseline) for seed in args.seeds]
        info: dict[str, Any] = {"baseline": baseline}
        if args.seconds is not None:
            info["measured_seconds"] = args.seconds
        files = gather(args.seeds, revs, _dvc_read, stages=seeded_stages(args.targets), run_info=info)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: seed_runs: {' '.join(error.cmd)} failed (exit {error.returncode})", file=sys.stderr)
        return 2
    atomic_write_text(PATHS.seeds / "README.md", SEEDS_README)
    print(f"seed_runs: gathered {len(files)} files under {PATHS.seeds}/ (now: dvc repro report)")
    return 0


SEEDS_README = """\
# Training-seed runs (`make claims`)

Gathered by `python -m cascadelab.pipeline.seed_runs gather` from the DVC experiments `claims-seed-<N>`
(`training_seed=N`, same corpus and test items as the default run): one folder per seed in the project's
layout (`metrics/<stage>.json`, `plots/<stage>/{details,timing}.json`, `plots/<stage>/items.jsonl.gz`), and
`runs.json` (experiments, commits, measured wall time). The report decides the claims over these seeds and
the default run (`metrics/claims_seeds.json`, docs/results.md). Do not edit: rerun `make claims`.
"""


if __name__ == "__main__":
    raise SystemExit(main())
