"""Training the refiner: data (pairs | fresh | both), teacher forcing through `train_sft`, RL strategies.

* Data: `pairs` are `cascade_pairs` rows (the coarse output in the `[COARSE]` slot when `use_coarse`);
  `fresh` are newly generated gold items of the mix's families from `cascadelab.data.tasks` (seeded rng,
  never a val/test prompt), with the coarse model's greedy answer in the slot when `use_coarse`; `both`
  joins them. Target: the worked `steps` (or the `response` for the answer baseline).
* `teacher_forcing`: `train_sft` with the loss on the target only, one family per batch, the settings'
  mix; with `per_family` one refiner per routed family, each on its own budget (`family_steps`) with the
  non-routed families of the mix as support (e.g. add/sub for word problems; `family_support` narrows it).
* `self_improvement`: TRL `GRPOTrainer` from the teacher-forced refiner; reward = verified(refined) −
  verified(coarse) − λ·LIMEN tension + a format term for well-formed steps.
* `adversarial`: a small discriminator learns gold vs refined steps; its "looks gold" probability joins
  the self-improvement reward.
* `train_equal_compute_control`: the coarse model trained further in its own format for the same number
  of steps (`coarse_more`), the control the cascade must beat.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from cascadelab.cascade.formatting import parse_steps, refiner_record
from cascadelab.cascade.limen import Limen
from cascadelab.cascade.pairs import TaskVerifier
from cascadelab.cascade.refiner import SHARED, Refiner, build_separate_model
from cascadelab.cascade.router import PromptRouter
from cascadelab.config import CurriculumParams, LoraParams, RefinerSettings, RefinerTrainSettings
from cascadelab.data.batches import pad_rows, padding_mask
from cascadelab.data.corpus import normalise_prompt
from cascadelab.data.tasks import get_family
from cascadelab.eval.generation import generate_batched
from cascadelab.training.callbacks import StepLosses
from cascadelab.training.schedules import constant_schedule
from cascadelab.training.sft import SFTResult, train_sft
from cascadelab.training.sft_jobs import SFTJob, run_jobs
from cascadelab.training.trainer import LMTrainer, StepSettings
from cascadelab.training.trl_config import trl_args

if TYPE_CHECKING:
    from trl import GRPOConfig

Record = dict[str, Any]
ANSWER_PREFIX = "answer-"  # job keys of the answer-target baseline's refiners
NODRAFT_PREFIX = "nodraft-"  # job keys of the draft ablation's refiners
LogFn = Callable[[dict[str, float], int], None]
DRAFT_TOKENS = 8  # a coarse answer is <= 6 tokens + EOS (cascade_eval's coarse_max_new_tokens)


@dataclass
class RefinerOutcome:
    """A trained refiner, its metrics and its training curve(s)."""

    refiner: Refiner
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    control: PreTrainedModel | None = None  # `coarse_more`, the equal-compute control
    control_history: list[dict[str, float]] = field(default_factory=list)
    answer_baseline: Refiner | None = None  # the answer-target refiner (`answer_baseline`)
    nodraft: Refiner | None = None  # the same refiner trained without the draft (`draft_ablation`)


# ---------------------------------------------------------------------------------------------- data
def corpus_levels(records: Sequence[Record]) -> dict[str, list[int]]:
    """Difficulty levels present per task in `records`."""
    levels: dict[str, set[int]] = {}
    for record in records:
        levels.setdefault(record["task"], set()).add(int(record["difficulty"]))
    return {task: sorted(values) for task, values in levels.items()}


def fresh_records(
    levels: Mapping[str, Sequence[int]],
    per_cell: int,
    seed: int,
    answer_format: str = "reversed",
    exclude_prompts: Sequence[str] = (),
) -> list[Record]:
    """New gold items per (family, level), distinct, none of whose prompts is in `exclude_prompts`.

    A small cell (1-digit × 2-digit multiplication has 720 prompts) yields what is left of it.
    """
    excluded = {normalise_prompt(p) for p in exclude_prompts}
    records: list[Record] = []
    for task in sorted(levels):
        family = get_family(task, answer_format)  # type: ignore[arg-type]  # validated by the corpus meta
        for difficulty in levels[task]:
            rng = random.Random(f"{seed}:fresh:{task}:{difficulty}")
            wanted = min(per_cell, family.space_size(difficulty))
            seen: set[str] = set()
            attempts = 0
            while len(seen) < wanted and attempts < 20 * wanted:
                attempts += 1
                item = family.sample(rng, difficulty)
                key = normalise_prompt(item.prompt)
                if key in excluded or key in seen:
                    continue
                seen.add(key)
                records.append(
                    {
                        "id": f"fresh-{task}{difficulty}-{len(seen):06d}",
                        "task": task,
                        "difficulty": difficulty,
                        "prompt": item.prompt,
                        "response": item.response,
                        "answer": item.answer,
                        "steps": item.steps,
                    }
                )
    return records


def coarse_drafts(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: RefinerSettings,
    seed: int,
    max_new_tokens: int = DRAFT_TOKENS,
) -> list[str]:
    """The frozen coarse model's drafts of `prompts`, as at test time: greedy for most, a sample at
    `format.draft_temperature` for a seeded `format.sampled_drafts` share (the wrong drafts a refiner meets)."""
    fmt = settings.format
    rng = random.Random(f"{seed}:drafts")
    sampled = [rng.random() < fmt.sampled_drafts for _ in prompts]
    drafts = [""] * len(prompts)
    for do_sample in (False, True):
        indices = [i for i, s in enumerate(sampled) if s == do_sample]
        if not indices:
            continue
        outputs = generate_batched(
            coarse_model,
            tokenizer,
            [prompts[i] for i in indices],
            max_new_tokens,
            do_sample=do_sample,
            temperature=fmt.draft_temperature if do_sample else 1.0,
            seed=seed,
            desc="drafts",
        )
        for i, output in zip(indices, outputs, strict=True):
            drafts[i] = output[0]
    return drafts


def training_rows(
    settings: RefinerSettings,
    pairs: Sequence[Record],
    train_records: Sequence[Record],
    eval_records: Sequence[Record],
    seed: int,
    answer_format: str = "reversed",
    coarse_model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> list[Record]:
    """Refiner rows (`prompt` = refiner input, `target`, `task`, ...) for the settings' data source and mix.

    `eval_records` (val and test) are excluded from fresh items. Fresh items get the coarse model's greedy
    answer in the slot when `format.use_coarse` (then `coarse_model` and `tokenizer` are required).
    """
    tasks = {t for t, w in settings.mix.items() if w > 0}
    fmt = settings.format
    rows: list[Record] = []
    if settings.data in ("pairs", "both"):
        rows.extend(refiner_record(p, p["coarse"], fmt) for p in pairs if p["task"] in tasks)
    if settings.data in ("fresh", "both"):
        known = corpus_levels(train_records)
        levels = {t: list(settings.fresh_difficulties.get(t) or known.get(t) or [1]) for t in sorted(tasks)}
        exclude = [r["prompt"] for r in eval_records]
        items = fresh_records(levels, settings.fresh_per_cell, seed, answer_format, exclude)
        coarse: list[str | None] = [None] * len(items)
        if fmt.use_coarse:
            if coarse_model is None or tokenizer is None:
                raise ValueError("format.use_coarse: fresh items need the coarse model to fill the [COARSE] slot")
            coarse = list(coarse_drafts(coarse_model, tokenizer, [r["prompt"] for r in items], settings, seed))
        rows.extend(refiner_record(r, c, fmt) for r, c in zip(items, coarse, strict=True))
    if not rows:
        raise ValueError(f"refiner.data: no training rows for the mix families {sorted(tasks)}")
    return rows


# ---------------------------------------------------------------------------------------------- teacher forcing
def clone_model(model: PreTrainedModel) -> PreTrainedModel:
    """An independent trainable copy: rebuilt from the config, weights copied.

    `copy.deepcopy` is not enough for a model that went through a trainer: its instance-level `forward`
    (patched by TRL/accelerate) still closes over the original, so the copy would compute with, and train,
    the original's weights.
    """
    clone = type(model)(copy.deepcopy(model.config))
    clone.load_state_dict(model.state_dict())
    clone.generation_config = copy.deepcopy(model.generation_config)
    parameter = next(model.parameters())
    cast(Any, clone).to(device=parameter.device, dtype=parameter.dtype)  # `PreTrainedModel.to` is loosely typed
    clone.train()
    return clone


def initial_model(coarse_model: PreTrainedModel, settings: RefinerSettings) -> PreTrainedModel:
    """The model training starts from: a copy of the coarse model (full, lora) or a separate one."""
    if settings.mode == "separate":
        return build_separate_model(coarse_model, settings.separate)
    return clone_model(coarse_model)


def _lora(settings: RefinerSettings) -> LoraParams | None:
    if settings.mode != "lora":
        return None
    lora = settings.lora
    return LoraParams(
        enabled=True, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=list(lora.target_modules)
    )


def refiner_jobs(coarse_model: PreTrainedModel, rows: Sequence[Record], settings: RefinerSettings) -> list[SFTJob]:
    """One SFT job per routed family (`per_family`, with the mix's other families as support) or one shared job."""
    curriculum = CurriculumParams(
        warmup_tasks=list(settings.warmup_tasks), group_batches_by_task=settings.group_batches_by_task
    )
    plan: dict[str, tuple[dict[str, float], int]] = {}
    if settings.per_family:
        support = {t: w for t, w in settings.mix.items() if w > 0 and t not in settings.route_tasks}
        for task in settings.route_tasks:
            chosen = settings.family_support.get(task, list(support))  # validated: names in `support`
            plan[task] = (
                {task: settings.mix[task], **{t: support[t] for t in chosen}},
                settings.family_steps.get(task, settings.train.max_steps),
            )
    else:
        plan[SHARED] = ({t: w for t, w in settings.mix.items() if w > 0}, settings.train.max_steps)
    return [
        SFTJob(
            key=key,
            model=initial_model(coarse_model, settings),
            rows=[r for r in rows if r["task"] in mix],
            train=settings.train.model_copy(update={"max_steps": steps}),
            mix=mix,
            curriculum=curriculum,
            target_field="target",
            lora=_lora(settings),
        )
        for key, (mix, steps) in plan.items()
    ]


def expected_tokens(tokenizer: PreTrainedTokenizerBase, job: SFTJob, sample: int = 1000) -> float:
    """Non-padding training tokens a job will see: steps × batch × the mix-weighted mean row length.

    A row costs its prompt, its target and EOS (what `train_sft` counts); each task's mean is taken over
    at most `sample` of its rows (the first ones, so the estimate is deterministic).
    """
    by_task: dict[str, list[Record]] = {}
    for row in job.rows:
        by_task.setdefault(row["task"], []).append(row)
    weights = {t: w for t, w in job.mix.items() if w > 0 and t in by_task}
    total = sum(weights.values())
    if not total:
        raise ValueError(f"sft job {job.key!r}: no rows for its mix {sorted(job.mix)}")
    mean = 0.0
    for task, weight in weights.items():
        part = by_task[task][:sample]
        ids = tokenizer([r["prompt"] + r[job.target_field] for r in part], add_special_tokens=False)["input_ids"]
        mean += weight / total * (sum(len(x) for x in ids) / len(part) + 1)
    return job.train.max_steps * job.train.batch_size * mean


def answer_baseline_settings(settings: RefinerSettings) -> RefinerSettings:
    """The settings of the answer-target baseline: the same refiner, trained to re-emit the answer directly."""
    return settings.model_copy(
        update={
            "format": settings.format.model_copy(update={"target": "answer", "family_targets": {}}),
            "answer_baseline": False,
        }
    )


def nodraft_settings(settings: RefinerSettings) -> RefinerSettings:
    """The draft ablation's settings: the same refiner with an empty `[COARSE]` slot (skip_coarse's refiner)."""
    return settings.model_copy(
        update={
            "format": settings.format.model_copy(update={"use_coarse": False}),
            "answer_baseline": False,
            "draft_ablation": False,
        }
    )


def control_job(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_records: Sequence[Record],
    settings: RefinerSettings,
    refiners: Sequence[SFTJob],
) -> SFTJob:
    """`coarse_more`: a copy of the coarse model trained on its own `response` format, the refiners' mix, and
    their total budget: as many training tokens (`control.budget: tokens`, equal compute) or as many steps."""
    mix = {t: w for t, w in settings.mix.items() if w > 0}
    rows = [r for r in train_records if r["task"] in mix]
    train = settings.train.model_copy(update={"num_threads": settings.control.num_threads})
    job = SFTJob("coarse_more", clone_model(coarse_model), rows, train, mix, target_field="response")
    steps = sum(j.train.max_steps for j in refiners)
    if settings.control.budget == "tokens":
        per_step = expected_tokens(tokenizer, job) / job.train.max_steps
        steps = math.ceil(sum(expected_tokens(tokenizer, j) for j in refiners) / per_step)
    job.train = job.train.model_copy(update={"max_steps": steps})
    return job


def train_teacher_forcing(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Record],
    settings: RefinerSettings,
    seed: int,
    output_dir: Path,
    report_to: Sequence[str] = (),
    callbacks: Sequence[TrainerCallback] = (),
    extra_jobs: Sequence[SFTJob] = (),
    router: PromptRouter | None = None,
) -> tuple[Refiner, dict[str, SFTResult]]:
    """Teacher-forced refiner(s) on `rows`; the coarse model itself is left untouched (training uses a copy).

    `extra_jobs` (e.g. the control) train alongside, in parallel when `settings.parallel`; their results are
    returned under their keys beside the refiners' (their models are updated in place).
    """
    jobs = refiner_jobs(coarse_model, rows, settings)
    trained = run_jobs([*extra_jobs, *jobs], tokenizer, seed, output_dir, settings.parallel, report_to, callbacks)
    refiner = Refiner({job.key: trained[job.key][0] for job in jobs}, tokenizer, settings, router)
    return refiner, {key: result for key, (_, result) in trained.items()}


# ---------------------------------------------------------------------------------------------- RL strategies
class StepDiscriminator(nn.Module):
    """Scores how gold-like a refiner output looks: token embeddings, mean-pooled, an MLP, a logit."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logit of "gold" for each row of token ids (mask 1 on real tokens)."""
        weights = mask.float().unsqueeze(-1)
        pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1).clamp_min(1)
        return self.head(pooled).squeeze(-1)

    @torch.no_grad()
    def gold_probability(self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[float]:
        """P(gold) for each text."""
        ids, mask = _pad(tokenizer, texts)
        return torch.sigmoid(self(ids, mask)).tolist()


def _pad(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [
        list(x) or [int(tokenizer.pad_token_id or 0)]
        for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ]
    return pad_rows(rows, int(tokenizer.pad_token_id or 0)), padding_mask(rows)


def train_discriminator(
    tokenizer: PreTrainedTokenizerBase,
    gold: Sequence[str],
    refined: Sequence[str],
    hidden: int,
    steps: int,
    learning_rate: float,
    seed: int,
    batch_size: int = 64,
) -> tuple[StepDiscriminator, list[float]]:
    """Train a `StepDiscriminator` on gold (label 1) vs refined (label 0) texts; returns it and its losses.

    The steps run on the LM trainer: AdamW at a constant rate, no clipping, `batch_size` texts drawn by `seed`.
    """
    if not gold or not refined:
        raise ValueError("adversarial: the discriminator needs gold and refined texts")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = StepDiscriminator(len(tokenizer), hidden)
    texts, labels = [*gold, *refined], torch.tensor([1.0] * len(gold) + [0.0] * len(refined))

    def compute_loss(model: StepDiscriminator, batch: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        ids, mask = _pad(tokenizer, [texts[i] for i in batch])
        return nn.functional.binary_cross_entropy_with_logits(model(ids, mask), labels[batch]), {}

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    losses = StepLosses()
    loop = StepSettings(max_steps=steps, max_grad_norm=None, logging_steps=steps)
    trainer = LMTrainer(
        model, [optimizer], loop, None, compute_loss=compute_loss, schedule=constant_schedule, callbacks=[losses]
    )
    trainer.fit(torch.randint(len(texts), (batch_size,), generator=generator).tolist() for _ in range(steps))
    model.eval()
    return model, losses.values


def refinement_reward(
    verifier: TaskVerifier,
    settings: RefinerSettings,
    limen: Limen | None = None,
    discriminator: StepDiscriminator | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Callable[..., list[float]]:
    """The GRPO reward: verified(refined) − verified(coarse) − λ·tension + format term (+ discriminator)."""
    rl = settings.self_improvement

    def reward(
        prompts: list[str],
        completions: list[str],
        task: list[str],
        answer: list[str],
        coarse_correct: list[float],
        source_prompt: list[str],
        **kwargs: Any,
    ) -> list[float]:
        values = []
        for t, a, c, out in zip(task, answer, coarse_correct, completions, strict=True):
            value = float(verifier.verify(t, out, a)) - float(c)
            value += rl.format_weight * float(parse_steps(out).well_formed)
            values.append(value)
        if limen is not None and rl.tension_weight:
            intentions = limen.create_intentions(source_prompt, completions, "refined", task)
            values = [
                v - rl.tension_weight * t for v, t in zip(values, limen.tensions(intentions).tolist(), strict=True)
            ]
        if discriminator is not None and tokenizer is not None:
            weight = settings.adversarial.weight
            gold = discriminator.gold_probability(tokenizer, completions)
            values = [v + weight * (g - 0.5) for v, g in zip(values, gold, strict=True)]
        return values

    return reward


def self_improvement_config(
    settings: RefinerSettings, output_dir: Path, seed: int, report_to: Sequence[str] = ()
) -> GRPOConfig:
    """TRL's GRPO arguments of one refiner's self-improvement run (no KL term: beta 0)."""
    from trl import GRPOConfig

    rl = settings.self_improvement
    return trl_args(
        GRPOConfig,
        rl,
        seed,
        output_dir,
        report_to=report_to,
        num_generations=rl.num_generations,
        temperature=rl.temperature,
        max_completion_length=settings.max_new_tokens,
        beta=0.0,
        save_strategy="no",
        disable_tqdm=True,
    )


def train_self_improvement(
    refiner: Refiner,
    rows: Sequence[Record],
    verifier: TaskVerifier,
    seed: int,
    output_dir: Path,
    limen: Limen | None = None,
    discriminator: StepDiscriminator | None = None,
    report_to: Sequence[str] = (),
) -> list[dict[str, float]]:
    """GRPO on the refiner's own samples (in place, every model of the refiner); returns the logged rows."""
    from datasets import Dataset
    from trl import GRPOTrainer

    settings = refiner.settings
    rl = settings.self_improvement
    reward = refinement_reward(verifier, settings, limen, discriminator, refiner.tokenizer)
    reward.__name__ = "refinement_reward"
    reward_funcs: list[Any] = [reward]
    history: list[dict[str, float]] = []
    for key, model in refiner.models.items():
        part = [r for r in rows if key == SHARED or r["task"] == key]
        part = random.Random(f"{seed}:grpo:{key}").sample(part, min(rl.max_prompts, len(part)))
        dataset = Dataset.from_list(
            [
                {
                    "prompt": r["prompt"],
                    "task": r["task"],
                    "answer": r["answer"],
                    "coarse_correct": float(r.get("coarse_correct", 0.0)),
                    "source_prompt": r["source_prompt"],
                }
                for r in part
            ]
        )
        config = self_improvement_config(settings, output_dir / f"grpo-{key}", seed, report_to)
        model.train()
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=config,
            train_dataset=dataset,
            processing_class=refiner.tokenizer,
        )
        trainer.train()
        model.eval()
        history.extend(
            {"key": float(list(refiner.models).index(key)), **_numeric(row)} for row in trainer.state.log_history
        )
    return history


def _numeric(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float)}


# ---------------------------------------------------------------------------------------------- control
def train_equal_compute_control(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_records: Sequence[Record],
    steps: int,
    train: RefinerTrainSettings,
    mix: dict[str, float],
    seed: int,
    output_dir: Path,
    report_to: Sequence[str] = (),
) -> tuple[PreTrainedModel, SFTResult]:
    """`coarse_more`: a copy of the coarse model trained `steps` more on its own `response` format."""
    model = clone_model(coarse_model)
    trained, result = train_sft(
        model,
        tokenizer,
        list(train_records),
        train.model_copy(update={"max_steps": steps}),
        CurriculumParams(warmup_tasks=[]),
        mix,
        seed,
        output_dir,
        report_to=report_to,
    )
    trained.eval()
    return trained, result


# ---------------------------------------------------------------------------------------------- evaluation
def refiner_exact_match(
    refiner: Refiner,
    records: Sequence[Record],
    verifier: TaskVerifier,
    coarse_outputs: Sequence[str | None] | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Exact match (%) of the refiner's final answers on `records`, overall and per task (`refined_em_*`)."""
    if not records:
        return {}
    coarse = list(coarse_outputs) if coarse_outputs is not None else [None] * len(records)
    outputs = refiner.generate(
        [r["prompt"] for r in records], coarse, [r["task"] for r in records], batch_size=batch_size
    )
    return _exact_match_by_task(records, outputs, verifier, "refined_em")


def model_exact_match(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    verifier: TaskVerifier,
    batch_size: int = 256,
    max_new_tokens: int = 12,
) -> dict[str, float]:
    """Exact match (%) of a direct-answer model's greedy outputs on `records`, overall and per task (`em_*`)."""
    if not records:
        return {}
    outputs = generate_batched(model, tokenizer, [r["prompt"] for r in records], max_new_tokens, batch_size)
    return _exact_match_by_task(records, [output[0] for output in outputs], verifier, "em")


def _exact_match_by_task(
    records: Sequence[Record], outputs: Sequence[str], verifier: TaskVerifier, prefix: str
) -> dict[str, float]:
    """Share (%) of `outputs` that verify against their record's answer: `<prefix>` overall, `<prefix>_<task>`."""
    hits: dict[str, list[int]] = {}
    for record, output in zip(records, outputs, strict=True):
        ok = int(verifier.verify(record["task"], output, record["answer"]))
        for key in (prefix, f"{prefix}_{record['task']}"):
            hits.setdefault(key, [0, 0])
            hits[key][0] += ok
            hits[key][1] += 1
    return {key: 100.0 * right / total for key, (right, total) in sorted(hits.items())}


def train_router(train_records: Sequence[Record]) -> PromptRouter | None:
    """The prompt → family router, fitted on the train records' prompts and tasks (None without prompts)."""
    known = [r for r in train_records if r.get("prompt")]
    if not known:
        return None
    return PromptRouter.fit([r["prompt"] for r in known], [r["task"] for r in known])


def run_refiner(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    verifier: TaskVerifier,
    settings: RefinerSettings,
    seed: int,
    work_dir: Path,
    pairs: Sequence[Record],
    train_records: Sequence[Record],
    eval_records: Sequence[Record],
    answer_format: str = "reversed",
    limen: Limen | None = None,
    val_records: Sequence[Record] = (),
    report_to: Sequence[str] = (),
) -> RefinerOutcome:
    """The stage's logic: build rows, teacher-force, then the RL strategy if asked; metrics on `val_records`.

    `pairs` are the train pairs of `cascade_pairs`; `eval_records` every val/test record (kept out of fresh
    items); `val_records` those to measure refined exact match on (routed families only). The caller saves
    `outcome.refiner` (`Refiner.save`, e.g. to models/refiner).
    """
    started = time.perf_counter()
    router = train_router(train_records)
    rows = training_rows(settings, pairs, train_records, eval_records, seed, answer_format, coarse_model, tokenizer)
    extra: list[SFTJob] = []
    control = None
    if settings.control.enabled:
        control = control_job(
            coarse_model, tokenizer, train_records, settings, refiner_jobs(coarse_model, rows, settings)
        )
        extra.append(control)
    baseline_settings = answer_baseline_settings(settings)
    baseline_jobs: list[SFTJob] = []
    if settings.answer_baseline:
        baseline_rows = training_rows(
            baseline_settings, pairs, train_records, eval_records, seed, answer_format, coarse_model, tokenizer
        )
        baseline_jobs = refiner_jobs(coarse_model, baseline_rows, baseline_settings)
        for job in baseline_jobs:
            job.key = f"{ANSWER_PREFIX}{job.key}"
        extra.extend(baseline_jobs)
    ablation_settings = nodraft_settings(settings)
    ablation_jobs: list[SFTJob] = []
    if settings.draft_ablation:
        ablation_rows = training_rows(ablation_settings, pairs, train_records, eval_records, seed, answer_format)
        ablation_jobs = refiner_jobs(coarse_model, ablation_rows, ablation_settings)
        for job in ablation_jobs:
            job.key = f"{NODRAFT_PREFIX}{job.key}"
        extra.extend(ablation_jobs)
    trained_at = time.perf_counter()
    refiner, results = train_teacher_forcing(
        coarse_model, tokenizer, rows, settings, seed, work_dir, report_to, extra_jobs=extra, router=router
    )
    control_result = results.pop(control.key) if control else None
    baseline = None
    if baseline_jobs:
        models = {job.key.removeprefix(ANSWER_PREFIX): job.model for job in baseline_jobs}
        baseline_results = {key: results.pop(f"{ANSWER_PREFIX}{key}") for key in models}
        baseline = Refiner(models, tokenizer, baseline_settings, router)
    nodraft = None
    if ablation_jobs:
        models = {job.key.removeprefix(NODRAFT_PREFIX): job.model for job in ablation_jobs}
        ablation_results = {key: results.pop(f"{NODRAFT_PREFIX}{key}") for key in models}
        nodraft = Refiner(models, tokenizer, ablation_settings, router)
    history = [{**row, "model": float(i)} for i, result in enumerate(results.values()) for row in result.history]
    metrics: dict[str, float] = {
        "train_rows": float(len(rows)),
        "train_steps": float(sum(settings.family_steps.get(k, settings.train.max_steps) for k in results)),
        "train_seconds": sum(r.train_seconds for r in results.values()),
        "train_tokens": float(sum(r.train_tokens for r in results.values())),
        "final_train_loss": sum(r.final_loss for r in results.values()) / len(results),
        "training_wall_seconds": time.perf_counter() - trained_at,
    }
    for key, result in results.items():
        metrics[f"train_seconds_{key}"] = result.train_seconds
        metrics[f"train_tokens_{key}"] = float(result.train_tokens)
    if baseline is not None:
        metrics["answer_train_seconds"] = sum(r.train_seconds for r in baseline_results.values())
        metrics["answer_train_tokens"] = float(sum(r.train_tokens for r in baseline_results.values()))
    if nodraft is not None:
        metrics["nodraft_train_seconds"] = sum(r.train_seconds for r in ablation_results.values())
        metrics["nodraft_train_tokens"] = float(sum(r.train_tokens for r in ablation_results.values()))
    if control is not None and control_result is not None:
        metrics["control_steps"] = float(control.train.max_steps)
        metrics["control_train_seconds"] = control_result.train_seconds
        metrics["control_train_tokens"] = float(control_result.train_tokens)
        metrics["control_final_train_loss"] = control_result.final_loss
    if settings.strategy in ("self_improvement", "adversarial"):
        discriminator = None
        if settings.strategy == "adversarial":
            sample = random.Random(f"{seed}:disc").sample(list(rows), min(len(rows), 2000))
            refined = refiner.generate_from_inputs([r["prompt"] for r in sample], [r["task"] for r in sample])
            adv = settings.adversarial
            discriminator, losses = train_discriminator(
                tokenizer,
                [r["target"] for r in sample],
                refined,
                adv.disc_hidden,
                adv.disc_steps,
                adv.disc_learning_rate,
                seed,
            )
            metrics["discriminator_final_loss"] = losses[-1]
        rl_started = time.perf_counter()
        train_self_improvement(refiner, rows, verifier, seed, work_dir, limen, discriminator, report_to)
        metrics["rl_seconds"] = time.perf_counter() - rl_started
    metrics["refiner_bytes"] = float(refiner.size_bytes())
    if val_records and router is not None:
        metrics["router_val_accuracy"] = router.accuracy(
            [r["prompt"] for r in val_records], [r["task"] for r in val_records]
        )
    routed = [r for r in val_records if r["task"] in settings.route_tasks]
    coarse: list[str | None] | None = None
    if settings.format.use_coarse and routed:
        prompts = [r["prompt"] for r in routed]
        coarse = [o[0] for o in generate_batched(coarse_model, tokenizer, prompts, DRAFT_TOKENS)]
    metrics.update({f"val_{k}": v for k, v in refiner_exact_match(refiner, routed, verifier, coarse).items()})
    if nodraft is not None:
        metrics.update({f"val_nodraft_{k}": v for k, v in refiner_exact_match(nodraft, routed, verifier).items()})
    if control is not None:
        metrics.update(
            {f"val_control_{k}": v for k, v in model_exact_match(control.model, tokenizer, routed, verifier).items()}
        )
    metrics["stage_seconds"] = time.perf_counter() - started
    control_history = control_result.history if control_result is not None else []
    return RefinerOutcome(
        refiner,
        metrics,
        history,
        int(metrics["train_steps"]),
        control.model if control else None,
        control_history,
        baseline,
        nodraft,
    )
