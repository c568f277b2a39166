"""Where the stages read and write: the one declaration, in code, of the paths dvc.yaml lists.

DVC can hand a stage its paths only on its command line, and changing a stage's `cmd` changes its
`dvc.lock` entry; params.yaml must not carry them either (a params change reruns stages). So the paths
live here, once: `PATHS` names every folder a stage reads or writes, `STAGES` says which ones each
stage reads (`deps`) and writes (`outs`), and `tests/unit/pipeline/test_paths.py` fails when they
disagree with the stage's `deps:` and `outs:` in dvc.yaml or when a stage's code uses a path it does
not declare. Stage scripts pass `PATHS` to `pipeline.<stage>.run`; tests pass `Paths.under(tmp_path)`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Every stage input and output folder, relative to the repository root unless built by `under`."""

    corpus: Path = Path("data/corpus")
    tokenizer: Path = Path("data/tokenizer")
    hidden_eval: Path = Path("data/hidden_eval")  # written beside the corpus (`data.hidden_eval.manifest_path`)
    code_tasks: Path = Path("data/code_tasks")
    coarse: Path = Path("models/coarse")
    cascade_pairs: Path = Path("data/cascade_pairs")
    limen: Path = Path("models/limen")
    refiner: Path = Path("models/refiner")
    coarse_more: Path = Path("models/coarse_more")
    refiner_answer: Path = Path("models/refiner_answer")
    refiner_nodraft: Path = Path("models/refiner_nodraft")
    hybrid_rnn: Path = Path("models/hybrid_rnn")
    lego_phase1: Path = Path("models/lego_phase1")
    lego_hard_examples: Path = Path("data/lego_hard_examples")
    lego: Path = Path("models/lego")
    lego_baseline: Path = Path("models/lego_baseline")
    acoc: Path = Path("models/acoc")
    acoc_baselines: Path = Path("models/acoc_baselines")
    acoc_history: Path = Path("data/acoc_history")
    sigma: Path = Path("models/sigma")
    sigma_pretrain_run: Path = Path("runs/sigma_pretrain")  # the trainer's output folder
    sigma_rl: Path = Path("models/sigma_rl")
    sigma_rl_run: Path = Path("runs/sigma_rl")
    metrics: Path = Path("metrics")
    plots: Path = Path("plots")
    claims: Path = Path("metrics/claims.json")  # the claims table (report), beside the stages' metrics
    seeds: Path = Path("metrics/seeds")  # the seed runs' files, gathered by `make claims` (pipeline/seed_runs.py)
    claims_seeds: Path = Path("metrics/claims_seeds.json")  # the claims over training seeds (report)
    results: Path = Path("docs/results.md")  # the generated results page (report)

    @classmethod
    def under(cls, root: Path) -> Paths:
        """The same layout below `root` (a test's temporary project)."""
        default = cls()
        return cls(**{f.name: root / getattr(default, f.name) for f in fields(cls)})

    def plots_of(self, stage: str) -> Path:
        """The folder of a stage's plot tables, prediction samples and figures."""
        return self.plots / stage

    def metrics_of(self, stage: str) -> Path:
        """A stage's headline figures (`pipeline.headline`): the JSON DVC shows, diffs and hashes as its metrics."""
        return self.metrics / f"{stage}.json"

    def details_of(self, stage: str) -> Path:
        """A stage's other science figures (breakdowns, counters, diagnostics): a plain output, not a DVC metric."""
        return self.plots_of(stage) / "details.json"

    def timing_of(self, stage: str) -> Path:
        """A stage's measurements of the machine (`pipeline.measurements`): a plain output, not a DVC metric."""
        return self.plots_of(stage) / "timing.json"

    def figures_of(self, stage: str) -> tuple[Path, Path, Path]:
        """The three files a stage's figures are split into: metrics, details, timing (what a reader merges)."""
        return self.metrics_of(stage), self.details_of(stage), self.timing_of(stage)


@dataclass(frozen=True)
class StageIO:
    """The `Paths` fields a stage reads (its data deps) and writes (its outs besides plots and metrics).

    Every stage also writes `figures_of(stage)`: its metrics, details and timing files (see
    `pipeline.runtime.write_stage_metrics`).
    """

    deps: tuple[str, ...]
    outs: tuple[str, ...]


PATHS = Paths()

STAGES: dict[str, StageIO] = {
    "prepare": StageIO((), ("corpus", "tokenizer", "hidden_eval", "code_tasks")),
    "coarse_sft": StageIO(("corpus", "tokenizer"), ("coarse",)),
    "sigma_pretrain": StageIO(("corpus", "tokenizer", "hidden_eval"), ("sigma", "sigma_pretrain_run")),
    "sigma_rl": StageIO(("corpus", "tokenizer", "code_tasks", "hidden_eval", "sigma"), ("sigma_rl", "sigma_rl_run")),
    "lego_phase1": StageIO(("corpus", "tokenizer"), ("lego_phase1",)),
    "lego_hard_examples": StageIO(("corpus", "tokenizer", "lego_phase1"), ("lego_hard_examples",)),
    "lego_phase2": StageIO(("corpus", "tokenizer", "lego_phase1", "lego_hard_examples"), ("lego", "lego_baseline")),
    "hybrid_rnn": StageIO(("corpus", "tokenizer"), ("hybrid_rnn",)),
    "cascade_pairs": StageIO(("corpus", "coarse"), ("cascade_pairs",)),
    "limen": StageIO(("corpus", "coarse", "cascade_pairs"), ("limen",)),
    "refiner": StageIO(
        ("corpus", "coarse", "cascade_pairs", "limen"),
        ("refiner", "coarse_more", "refiner_answer", "refiner_nodraft"),
    ),
    "cascade_eval": StageIO(
        ("corpus", "coarse", "limen", "refiner", "coarse_more", "refiner_answer", "refiner_nodraft"), ()
    ),
    "acoc": StageIO(("corpus", "tokenizer"), ("acoc", "acoc_baselines", "acoc_history")),
    # the stages' metrics, details and timing files, and the seed runs' (`make claims`)
    "report": StageIO(("metrics", "plots", "seeds"), ("claims", "claims_seeds", "results")),
}
