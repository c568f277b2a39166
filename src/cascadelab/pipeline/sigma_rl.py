"""The `sigma_rl` stage's logic: RL on the pretrained SigmaLLM with verifier rewards, mixed with LM steps.

One :class:`~cascadelab.training.sigma_loop.SigmaTrainer` loop drives the run. Every loop step is an
LM update on the corpus mix plus the code family's train split (the pretrained model has never seen
code); a share of the steps (:class:`~cascadelab.training.sigma.rl_lm_mix.RLMix`) also takes one GRPO/GSPO
update through TRL (:class:`~cascadelab.training.sigma.grpo_bridge.GRPOBridge`) in the loop's ``rl``
phase. Every ``train.eval_steps`` the held-out mean reward (greedy, on the steering part of the val
prompts of both kinds) and the LM val loss are measured and the mix decides. The reported held-out reward
is read on the disjoint reporting part only (:mod:`~cascadelab.pipeline.sigma_rl_control`).

With ``eval.control`` an LM-only control trains a second copy of the starting model: the same loop steps,
LM batches (same seed, same order), learning-rate schedule (the RL run's meta-loop factors replayed at the
same steps) and self-improver, with no GRPO update. Before and after the run the test splits are evaluated
for the start, the RL model and the control: math exact match per task
(:func:`~cascadelab.eval.lm.evaluate_lm`) and the code pass rate (every test passed in the sandbox); the
per-item results and per-prompt rewards go to ``plots/sigma_rl/items.jsonl``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.config import SigmaRLParams
from cascadelab.data.code_tasks import TASK as CODE_TASK
from cascadelab.data.code_tasks import load_code_split
from cascadelab.data.corpus import CorpusVerifier, Record, held_out_prompts, load_meta, load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.hidden_eval import check_manifest, manifest_path
from cascadelab.data.mixed_batches import TokenizedRows, mixed_batches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.eval.generation import generate_batched
from cascadelab.eval.lm import evaluate_lm
from cascadelab.eval.metrics import correct_items
from cascadelab.io import write_json
from cascadelab.models.sigma import SigmaForCausalLM
from cascadelab.pipeline.paths import Paths
from cascadelab.pipeline.sigma_pretrain import _save
from cascadelab.pipeline.sigma_rl_control import effects, items, split_heldout, train_flops
from cascadelab.sandbox import Limits, Sandbox, TestCase
from cascadelab.training.checkpoints import checkpoint_dir, discard
from cascadelab.training.integrity_guards import scale_learning_rate
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.run_checkpoints import CheckpointStore
from cascadelab.training.sigma.causal_replay import CausalReplay
from cascadelab.training.sigma.evolution import Evolution
from cascadelab.training.sigma.grpo_bridge import GRPOBridge, RLTask
from cascadelab.training.sigma.rl_lm_mix import RLMix
from cascadelab.training.sigma.verifier import CodeSpec, CodeVerifier, MathVerifier, VerifierCascade
from cascadelab.training.sigma_loop import SigmaTrainer
from cascadelab.training.trainer import LogFn, TrainResult, mean_loss


def code_spec(record: Record) -> CodeSpec:
    """The verifier reference of a code record: its tests and required literals."""
    tests = tuple(TestCase(t["expression"], t["expected"]) for t in record["tests"])
    return CodeSpec(tests, frozenset(record.get("required") or ()), max_chars=80)


def rl_tasks(records: Sequence[Record]) -> list[RLTask]:
    """RL prompts of corpus or code records (kind = the record's task; code gets its CodeSpec)."""
    return [
        RLTask(r["task"], r["prompt"], code_spec(r) if r["task"] == CODE_TASK else str(r["answer"])) for r in records
    ]


def build_cascade(
    meta: dict[str, Any], tasks: Sequence[str], sandbox: Sandbox | None, format_weight: float, asymmetric: bool
) -> VerifierCascade:
    """A cascade with one math verifier per corpus task and, with a sandbox, the code verifier."""
    checks: dict[str, Any] = {task: MathVerifier.for_task(meta, task) for task in tasks if task != CODE_TASK}
    if sandbox is not None:
        checks[CODE_TASK] = CodeVerifier(sandbox)
    return VerifierCascade(checks, format_weight, asymmetric)


def make_sandbox(params: SigmaRLParams) -> Sandbox:
    """A sandbox with the section's limits, warmed up (the first real call is not a false failure)."""
    s = params.sandbox
    sandbox = Sandbox(Limits(wall_seconds=s.wall_seconds, cpu_seconds=s.cpu_seconds, memory_bytes=s.memory_mb << 20))
    sandbox.warm_up()
    return sandbox


def greedy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], p: SigmaRLParams
) -> list[str]:
    """Greedy completions (deterministic) of `prompts`."""
    outputs = generate_batched(model, tokenizer, list(prompts), p.eval.max_new_tokens, p.eval.batch_size, desc="rl")
    return [o[0] for o in outputs]


def prompt_rewards(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[RLTask],
    cascade: VerifierCascade,
    params: SigmaRLParams,
) -> list[float]:
    """The reward of the greedy completion of each of `tasks`, in order."""
    outputs = greedy(model, tokenizer, [t.prompt for t in tasks], params)
    return [cascade.reward(t.kind, o, t.reference).value for t, o in zip(tasks, outputs, strict=True)]


def mean_rewards(tasks: Sequence[RLTask], rewards: Sequence[float]) -> dict[str, float]:
    """Mean of per-prompt `rewards`: overall (`heldout_reward`), `_math` and `_code`."""
    by_kind: dict[str, list[float]] = {"math": [], "code": []}
    for task, value in zip(tasks, rewards, strict=True):
        by_kind["code" if task.kind == CODE_TASK else "math"].append(value)
    every = by_kind["math"] + by_kind["code"]
    out = {"heldout_reward": sum(every) / len(every)}
    out.update({f"heldout_reward_{kind}": sum(v) / len(v) for kind, v in by_kind.items() if v})
    return out


def heldout_reward(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[RLTask],
    cascade: VerifierCascade,
    params: SigmaRLParams,
) -> dict[str, float]:
    """Mean reward of greedy completions on the held-out prompts: overall, `_math` and `_code`."""
    return mean_rewards(tasks, prompt_rewards(model, tokenizer, tasks, cascade, params))


def code_passes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    cascade: VerifierCascade,
    params: SigmaRLParams,
) -> tuple[list[bool], list[str]]:
    """Whether each code record's greedy answer passes every test in the sandbox, and the answers."""
    tasks = rl_tasks(records)
    outputs = greedy(model, tokenizer, [t.prompt for t in tasks], params)
    passed = [cascade.reward(t.kind, o, t.reference).correctness == 1.0 for t, o in zip(tasks, outputs, strict=True)]
    return passed, outputs


def code_pass_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    cascade: VerifierCascade,
    params: SigmaRLParams,
) -> tuple[float, list[str]]:
    """Share (%) of code records whose greedy answer passes every test in the sandbox, and the answers."""
    passed, outputs = code_passes(model, tokenizer, records, cascade, params)
    return 100.0 * sum(passed) / len(records), outputs


class RLPlugin:
    """The RL side of the loop: the mix decides, the bridge updates; counters, curves and state for the trainer."""

    def __init__(
        self,
        bridge: GRPOBridge | None,
        mix: RLMix,
        sandbox: Sandbox | None,
        params: SigmaRLParams,
        evolution: Evolution | None = None,
    ) -> None:
        self.bridge = bridge
        self.mix = mix
        self.evolution = evolution
        self.sandbox = sandbox
        self.params = params
        self.curve: list[dict[str, float]] = []  # held-out reward and share per eval window
        self.lm_steps = 0

    def hook(self, _trainer: SigmaTrainer, step: int) -> None:
        """The trainer's ``rl`` phase: one RL update when the mix says it is due."""
        self.lm_steps += 1
        if self.bridge is not None and self.mix.rl_due():
            if self.evolution is not None:
                self.evolution.before_rl_step()
            self.bridge.step(step)
            if self.evolution is not None:
                self.evolution.after_rl_step()

    def features(self) -> tuple[dict[str, bool], dict[str, int]]:
        """RL features (the bridge's), the auto-mix and the code rewards (code outputs the code verifier scored)."""
        enabled, calls = self.bridge.features() if self.bridge is not None else ({}, {})
        enabled = {**enabled, "auto_mix": self.mix.adaptive, "code_rl": self.sandbox is not None}
        code = self.bridge.reward.scored_by_kind.get(CODE_TASK, 0) if self.bridge is not None else 0
        calls = {**calls, "auto_mix": len(self.mix.decisions), "code_rl": code if self.sandbox is not None else 0}
        return enabled, calls

    def row(self) -> dict[str, float]:
        """The bridge's columns, the RL share, LM steps and the sandbox's runs (RL rewards only) by verdict."""
        row = self.bridge.row() if self.bridge is not None else {}
        row = {**row, "rl_share": self.mix.share, "lm_steps": float(self.lm_steps)}
        if self.sandbox is not None:
            row["sandbox_runs"] = float(sum(self.sandbox.counts.values()))
            row.update({f"sandbox_{status}": float(n) for status, n in sorted(self.sandbox.counts.items())})
        return row

    def state_dict(self) -> dict[str, Any]:
        """Bridge, mix, curve and LM step count."""
        return {
            "bridge": self.bridge.state_dict() if self.bridge is not None else None,
            "mix": self.mix.state_dict(),
            "curve": list(self.curve),
            "lm_steps": self.lm_steps,
            "sandbox_counts": dict(self.sandbox.counts) if self.sandbox is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        if self.bridge is not None:
            self.bridge.load_state_dict(state["bridge"])
        self.mix.load_state_dict(state["mix"])
        self.curve, self.lm_steps = list(state["curve"]), state["lm_steps"]
        if self.sandbox is not None:
            self.sandbox.counts.clear()
            self.sandbox.counts.update(state["sandbox_counts"])


@dataclass
class SigmaRLOutcome:
    """Metrics, the held-out curve, the mix decisions, a prediction sample and the trainer's metrics.jsonl."""

    metrics: dict[str, Any]
    curve: list[dict[str, float]]
    decisions: list[dict[str, Any]]
    history: list[dict[str, float]]
    predictions: list[dict[str, Any]]
    metrics_jsonl: Path
    items: list[dict[str, Any]]  # per reporting prompt and per test item: start, RL and control (plots/items.jsonl)


@dataclass
class TestReport:
    """A model's test figures: math EM per task (and code pass rate), outputs and per-item correctness."""

    metrics: dict[str, float]
    math_outputs: list[str]
    code_outputs: list[str]
    correct: list[bool]  # math items, then code items


def _test_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    math_test: list[Record],
    code_test: list[Record],
    verifier: CorpusVerifier,
    cascade: VerifierCascade | None,
    params: SigmaRLParams,
) -> TestReport:
    """Math EM per task and, with a cascade, the code pass rate on test, with per-item correctness."""
    report, math_outputs = evaluate_lm(
        model, tokenizer, math_test, verifier, params.eval.batch_size, params.eval.max_new_tokens
    )
    metrics = {k: v for k, v in report.items() if k.startswith("em")}
    correct = [bool(row["correct"]) for row in correct_items(math_test, math_outputs, verifier.verify)]
    code_outputs: list[str] = []
    if cascade is not None and code_test:
        passed, code_outputs = code_passes(model, tokenizer, code_test, cascade, params)
        metrics["code_pass"] = 100.0 * sum(passed) / len(code_test)
        correct += passed
    return TestReport(metrics, math_outputs, code_outputs, correct)


def run(
    params: SigmaRLParams,
    seed: int,
    paths: Paths,
    log_fn: LogFn | None = None,
    tracking_run: Any = None,
    data_seed: int | None = None,
) -> SigmaRLOutcome:
    """RL the pretrained SigmaLLM in `paths.sigma`, save it to `paths.sigma_rl`, log to `paths.sigma_rl_run`.

    `tracking_run` (the stage's MLflow run) parents the NAS trials' child runs. `data_seed` (None: `seed`)
    splits the held-out prompts into steering and reporting parts: a data choice, so runs at other training
    seeds report on the same prompts.
    """
    corpus_dir, tokenizer_dir, code_dir = paths.corpus, paths.tokenizer, paths.code_tasks
    sigma_dir, model_dir, out_dir = paths.sigma, paths.sigma_rl, paths.sigma_rl_run
    started = time.perf_counter()
    torch.set_num_threads(params.train.num_threads)
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "resolved_settings.json", {"seed": seed, "sigma_rl": params.model_dump(mode="json")})
    tokenizer = load_tokenizer(tokenizer_dir)
    meta = load_meta(corpus_dir)
    verifier = CorpusVerifier(meta)
    features = params.features
    use_code = features.code_rl
    math_tasks = sorted(t for t in params.mix if t != CODE_TASK)
    corpus_train, corpus_val = load_split(corpus_dir, "train"), load_split(corpus_dir, "val")
    code_train = load_code_split(code_dir, "train") if params.mix.get(CODE_TASK, 0) > 0 or use_code else []
    lm_records = corpus_train + (code_train if params.mix.get(CODE_TASK, 0) > 0 else [])
    hidden_checked = check_manifest(manifest_path(corpus_dir), (r["prompt"] for r in corpus_train + code_train))
    rows = TokenizedRows(tokenizer, lm_records)
    code_val = load_code_split(code_dir, "val") if use_code else []
    val_records = corpus_val[: params.train.eval_records] + code_val
    val_batches = TokenizedRows(tokenizer, val_records).sequential_batches(params.eval.batch_size)
    model = SigmaForCausalLM.from_pretrained(str(sigma_dir))
    model.config.use_cache = True
    optimizers = build_optimizers(model, params.optimizer)

    train_sandbox = make_sandbox(params) if use_code else None
    eval_sandbox = make_sandbox(params) if use_code else None
    cascade = build_cascade(meta, math_tasks, train_sandbox, params.format_weight, features.asym_verify)
    eval_cascade = build_cascade(meta, math_tasks, eval_sandbox, params.format_weight, True)
    steer_records, report_records = split_heldout(
        [r for r in corpus_val if r["task"] in math_tasks][: params.eval.heldout_math]
        + code_val[: params.eval.heldout_code],
        params.eval.steer_fraction,
        seed if data_seed is None else data_seed,
    )
    heldout, report_tasks = rl_tasks(steer_records), rl_tasks(report_records)  # steering part, reporting part
    settings = {"seed": seed, "sigma_rl": params.model_dump(mode="json")}
    folder = checkpoint_dir(
        "sigma_rl", settings, [Path(sigma_dir) / "model.safetensors", Path(code_dir) / "train.jsonl"]
    )
    checkpoints = CheckpointStore(folder, params.train.keep_checkpoints) if params.train.checkpoint_steps else None
    trainer = _trainer(model, optimizers, params, out_dir, features, log_fn, settings, checkpoints)
    trainer.prepare_model()
    limit = params.eval.test_records or None
    with final_evaluation("sigma_rl"):  # read once: the same items score the model before and after RL
        math_test = [r for r in load_split(corpus_dir, "test") if r["task"] in math_tasks][:limit]
        code_test = load_code_split(code_dir, "test")[:limit] if use_code else []
    before = _test_report(model, tokenizer, math_test, code_test, verifier, eval_cascade if use_code else None, params)
    start = heldout_reward(model, tokenizer, heldout, eval_cascade, params)
    start_report = prompt_rewards(model, tokenizer, report_tasks, eval_cascade, params)

    train_tasks: dict[str, list[RLTask]] = {"math": rl_tasks([r for r in corpus_train if r["task"] in math_tasks])}
    if use_code:
        train_tasks["code"] = rl_tasks(code_train)
    replay = None
    if features.causal_replay:
        r = params.replay
        replay = CausalReplay(r.capacity, r.alpha, r.min_advantage, r.staleness_decay, seed=seed)
    bridge = GRPOBridge(
        model,
        tokenizer,
        optimizers,
        train_tasks,
        cascade,
        params.grpo,
        seed,
        out_dir / "trl",
        max_grad_norm=params.train.max_grad_norm,
        replay=replay,
        replay_params=params.replay,
        code_share=params.grpo.code_share,
    )
    mix = RLMix(params.auto_mix, adaptive=features.auto_mix)
    exclude = held_out_prompts(corpus_dir)
    evolution = Evolution(
        params, seed, model, optimizers, tokenizer, verifier, math_tasks, exclude, val_batches[:1], out_dir
    )
    plugin = RLPlugin(bridge, mix, train_sandbox, params, evolution)
    mix.previous = (start["heldout_reward"], mean_loss(model, val_batches))
    plugin.curve.append({"step": 0.0, **start, "val_loss": mix.previous[1], "rl_share": mix.share})
    evolution.start(start["heldout_reward"], mix.previous[1])

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        figures = heldout_reward(model, tokenizer, heldout, eval_cascade, params)
        figures["val_loss"] = mean_loss(m, val_batches)
        figures.update(
            evolution.window(
                trainer,
                figures["heldout_reward"],
                figures["val_loss"],
                mix,
                lambda prompts: greedy(model, tokenizer, prompts, params),
            )
        )
        figures["rl_share"] = mix.share
        plugin.curve.append({"step": float(trainer.step), **figures})
        return figures

    lr_factors: dict[int, float] = {}  # the meta-loop's learning-rate factor per window step, for the control

    def evaluate_and_record(m: torch.nn.Module) -> dict[str, float]:
        scale = evolution.meta.lr_scale if evolution.meta is not None else 1.0
        figures = evaluate(m)
        lr_factors[trainer.step] = figures["lr_scale"] / scale
        return figures

    trainer.eval_fn = evaluate_and_record
    probe_batches = list(
        mixed_batches(rows, params.mix, 8, params.train.batch_size, seed + 1, params.train.group_batches_by_task)
    )
    evolution_metrics: dict[str, Any] = {}

    def finish(m: torch.nn.Module, _step: int) -> None:
        # before the last row is logged, so its counters include the draft heads and NAS
        _save(m, tokenizer, model_dir)
        evolution_metrics.update(evolution.finish(model, math_test, probe_batches, val_batches, tracking_run))

    trainer.checkpoint_fn = finish
    trainer.add_hook("rl", plugin.hook)
    trainer.add_plugin("rl", plugin)
    trainer.add_plugin("evolution", evolution)
    train = params.train
    result = trainer.fit(
        mixed_batches(rows, params.mix, train.max_steps, train.batch_size, seed, train.group_batches_by_task)
    )
    discard(folder)
    report = _test_report(model, tokenizer, math_test, code_test, verifier, eval_cascade if use_code else None, params)
    after, math_outputs, code_outputs = report.metrics, report.math_outputs, report.code_outputs
    rewards = {"start": start_report, "rl": prompt_rewards(model, tokenizer, report_tasks, eval_cascade, params)}
    correct = {"start": before.correct, "rl": report.correct}
    n_params = sum(p.numel() for p in model.parameters())
    rl_flops = train_flops(n_params, result.train_tokens, bridge.rl_tokens, params.grpo.num_iterations)
    control_metrics: dict[str, Any] = {}
    if params.eval.control:
        control_started = time.perf_counter()
        control_model, control_result = _control_run(params, seed, paths, tokenizer, lm_records, val_batches,
                                                     math_tasks, verifier, exclude, lr_factors, log_fn)  # fmt: skip
        control = _test_report(
            control_model, tokenizer, math_test, code_test, verifier, eval_cascade if use_code else None, params
        )
        rewards["control"] = prompt_rewards(control_model, tokenizer, report_tasks, eval_cascade, params)
        correct["control"] = control.correct
        control_metrics = {
            **{f"control_{k}": v for k, v in mean_rewards(report_tasks, rewards["control"]).items()},
            **{f"control_{k}": v for k, v in control.metrics.items()},
            "control_lm_steps": control_result.steps,
            "control_train_tokens": control_result.train_tokens,
            "control_train_flops": train_flops(n_params, control_result.train_tokens, 0, 1),
            "control_seconds": time.perf_counter() - control_started,
        }
    item_rows = items(report_records, rewards, math_test + code_test, correct)

    metrics: dict[str, Any] = {
        **{f"start_{k}": v for k, v in mean_rewards(report_tasks, start_report).items()},
        **{f"end_{k}": v for k, v in mean_rewards(report_tasks, rewards["rl"]).items()},
        **{f"steer_start_{k}": v for k, v in start.items()},
        **{f"steer_end_{k}": v for k, v in plugin.curve[-1].items() if k.startswith("heldout_reward")},
        "heldout_steer_prompts": len(heldout),
        "heldout_report_prompts": len(report_tasks),
        **{f"before_{k}": v for k, v in before.metrics.items()},
        **{f"after_{k}": v for k, v in after.items()},
        **control_metrics,
        **effects(item_rows, seed),
        "params": n_params,
        "train_tokens": result.train_tokens,
        "rl_tokens": bridge.rl_tokens,
        "rl_updates_on_stored": bridge.updates_on_stored,
        "train_flops": rl_flops,
        "rl_steps": bridge.steps,
        "lm_steps": plugin.lm_steps,
        "final_rl_share": mix.share,
        "mix_changes": mix.changes,
        "sandbox_isolation": train_sandbox.isolation.network if train_sandbox is not None else "none",
        "train_seconds": result.train_seconds,
        "hidden_eval_prompts_checked": hidden_checked,
        **{f"phase_{k}_s": v for k, v in result.phase_seconds.items()},
        **{k: v for k, v in result.features.items() if k.startswith("feature_")},
        **evolution_metrics,
    }
    metrics["reward_gain"] = metrics["end_heldout_reward"] - metrics["start_heldout_reward"]
    metrics["wall_seconds"] = time.perf_counter() - started
    sample = params.eval.sample_predictions
    predictions = [
        {"id": r["id"], "task": r["task"], "prompt": r["prompt"], "answer": r["answer"], "output": o}
        for r, o in list(zip(math_test, math_outputs, strict=True))[:sample]
        + list(zip(code_test, code_outputs, strict=True))[:sample]
    ]
    return SigmaRLOutcome(
        metrics, plugin.curve, mix.decision_rows(), result.history, predictions, result.metrics_path, item_rows
    )


def _trainer(
    model: PreTrainedModel,
    optimizers: Any,
    params: SigmaRLParams,
    out_dir: Path,
    features: Any,
    log_fn: LogFn | None,
    settings: dict[str, Any],
    checkpoints: CheckpointStore | None = None,
) -> SigmaTrainer:
    """The one LM loop of both arms (RL run and LM-only control), on the stage's train, INSTANT, guard, data and
    credit settings."""
    return SigmaTrainer(
        model,
        optimizers,
        params.train,
        out_dir,
        instant=params.instant,
        log_fn=log_fn,
        features=features,
        guards=params.guards,
        data=params.data,
        credit_interval=params.optimizer.c3o.credit_interval,
        settings=settings,
        checkpoints=checkpoints,
    )


def _control_run(
    params: SigmaRLParams,
    seed: int,
    paths: Paths,
    tokenizer: PreTrainedTokenizerBase,
    lm_records: list[Record],
    val_batches: list[Any],
    math_tasks: list[str],
    verifier: CorpusVerifier,
    exclude: Any,
    lr_factors: dict[int, float],
    log_fn: LogFn | None,
) -> tuple[PreTrainedModel, TrainResult]:
    """The LM-only control: the starting model, the RL run's LM batches, steps and lr schedule; no GRPO update.

    The self-improver runs as in the RL run (it is not GRPO); the meta-loop's learning-rate factors are replayed
    at the steps the RL run applied them, and no RL share is steered.
    """
    torch.manual_seed(seed)
    model = SigmaForCausalLM.from_pretrained(str(paths.sigma))
    model.config.use_cache = True
    optimizers = build_optimizers(model, params.optimizer)
    off = dict.fromkeys(("meta_loop", "research_log", "draft_heads", "fractal_nas", "counterfactual_credit"), False)
    quiet = params.model_copy(update={"features": params.features.model_copy(update=off)})
    out_dir = paths.sigma_rl_run / "control"
    control_log = (lambda row, step: log_fn({f"control_{k}": v for k, v in row.items()}, step)) if log_fn else None
    settings = {"seed": seed, "sigma_rl": params.model_dump(mode="json"), "arm": "control"}
    trainer = _trainer(model, optimizers, params, out_dir, params.features, control_log, settings)
    trainer.prepare_model()
    evolution = Evolution(quiet, seed, model, optimizers, tokenizer, verifier, math_tasks, exclude, val_batches[:1],
                          out_dir)  # fmt: skip
    mix = RLMix(params.auto_mix, adaptive=False)
    plugin = RLPlugin(None, mix, None, params, evolution)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        factor = lr_factors.get(trainer.step, 1.0)
        if factor != 1.0:
            scale_learning_rate(trainer.schedulers, factor)
        val_loss = mean_loss(m, val_batches)
        figures = evolution.window(
            trainer, float("nan"), val_loss, mix, lambda prompts: greedy(model, tokenizer, prompts, params)
        )
        return {"val_loss": val_loss, **figures}

    trainer.eval_fn = evaluate
    trainer.add_hook("rl", plugin.hook)
    trainer.add_plugin("rl", plugin)
    trainer.add_plugin("evolution", evolution)
    train = params.train
    rows = TokenizedRows(tokenizer, lm_records)
    result = trainer.fit(
        mixed_batches(rows, params.mix, train.max_steps, train.batch_size, seed, train.group_batches_by_task)
    )
    return model, result


__all__ = [
    "RLPlugin",
    "SigmaRLOutcome",
    "TestReport",
    "build_cascade",
    "code_pass_rate",
    "code_passes",
    "code_spec",
    "heldout_reward",
    "mean_rewards",
    "prompt_rewards",
    "rl_tasks",
    "run",
]
