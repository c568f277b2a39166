"""LIMEN: the cascade's validator and gate — a calibrated "this output is wrong" model plus a rule layer.

An *intention* is (input, output, stage): a prompt, a proposed output and the cascade stage that made it
(`coarse` or `refined`). LIMEN answers with a `Decision(approved, tension, reason)`, the tension being the
calibrated probability that the output's answer is wrong.

* Rule layer, before any model: an empty answer, a malformed one (the family verifier's `extract` fails,
  or refined steps that do not parse), an output over `max_output_chars`, or one containing a `blocked`
  string is refused with tension 1.
* Features, from the frozen base (coarse) model reading `input + answer`: its last hidden state
  mean-pooled over the answer positions, its mean token log-prob of the answer, format validity, answer
  and output length, and the task family one-hot. A refined output is judged by its final answer (the
  text after the last step separator), written in the same format as a coarse answer, so one classifier
  serves both stages.
* Classifier: L2-regularised logistic regression on standardised features (L-BFGS, deterministic),
  fitted on train pairs, then calibrated on val (Platt scaling or a temperature).
* Thresholds: a coarse output is approved when its tension is at most `threshold`, chosen on val as the
  lowest value that keeps the share of right outputs sent on (the worst case for breaking them) within
  the break-rate budget; a refined output when its tension is at most `refined_threshold`.
  `get_alternative_or_silence` picks the least-tense acceptable alternative, or silence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.cascade.formatting import parse_steps
from cascadelab.cascade.scoring import score_outputs
from cascadelab.config import LimenSettings
from cascadelab.data.tasks import FAMILIES, get_family
from cascadelab.io import atomic_directory

STAGES = ("coarse", "refined")
CHEAP_FEATURES = ("format_valid", "mean_logprob", "answer_chars", "output_chars")
WEIGHTS_FILE, META_FILE = "limen.safetensors", "limen.json"


class Extractor(Protocol):
    """Reads the final answer of an output (a task family)."""

    def extract(self, output: str) -> str | None:
        """The canonical answer in `output`, or None when malformed."""
        ...


class FamilyVerifier(Protocol):
    """Gives each task's extractor (`CorpusVerifier` satisfies it)."""

    def for_task(self, task: str) -> Extractor:
        """The extractor of `task`."""
        ...


@dataclass
class Intention:
    """What LIMEN judges: an input, a proposed output and the cascade stage that made it."""

    input: str
    output: str
    stage: str
    task: str | None = None
    generator_logprob: float | None = None  # the generator's own confidence, kept for traces
    rule: str | None = None  # why the rule layer refuses it (None: it passes)
    features: torch.Tensor | None = None


@dataclass(frozen=True)
class Decision:
    """LIMEN's verdict on an intention: approved or not, the tension in [0, 1], and why."""

    approved: bool
    tension: float
    reason: str


@dataclass(frozen=True)
class Fallback:
    """The output chosen when an intention is refused: an alternative's, or silence (`stage` None)."""

    output: str
    stage: str | None
    decision: Decision


@dataclass
class LimenGate:
    """The fitted classifier: standardisation, logistic weights and the calibration map."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    calibration: torch.Tensor = field(default_factory=lambda: torch.tensor([1.0, 0.0]))  # p = σ(a·z + b)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits of "wrong"."""
        return ((features - self.mean) / self.std) @ self.weight + self.bias

    def tension(self, features: torch.Tensor) -> torch.Tensor:
        """Calibrated probability of "wrong"."""
        a, b = self.calibration.tolist()
        return torch.sigmoid(a * self.logits(features) + b)


def answer_text(output: str, stage: str) -> str:
    """The part of an output LIMEN judges: the whole coarse output, the final answer of refined steps."""
    return parse_steps(output).answer if stage == "refined" else output.strip()


@dataclass(eq=False)
class Limen:
    """The gate: rules, features from the frozen base model, a calibrated classifier and thresholds."""

    base_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    verifier: FamilyVerifier
    settings: LimenSettings
    tasks: list[str] = field(default_factory=list)
    gate: LimenGate | None = None
    threshold: float = 0.5
    base_context: Callable[[], AbstractContextManager[Any]] = nullcontext  # e.g. a LoRA refiner's `disable_adapter`

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)  # a copy: `fit` and the one-hot columns own it

    # ------------------------------------------------------------------------------------------ intentions
    def create_intention(
        self,
        input: str,  # the seed's API name
        output: str,
        stage: str,
        task: str | None = None,
        generator_logprob: float | None = None,
    ) -> Intention:
        """One intention with its rule verdict and features."""
        return self.create_intentions([input], [output], stage, [task], [generator_logprob])[0]

    def create_intentions(
        self,
        inputs: Sequence[str],
        outputs: Sequence[str],
        stage: str,
        tasks: Sequence[str | None] | None = None,
        generator_logprobs: Sequence[float | None] | None = None,
    ) -> list[Intention]:
        """Intentions for many outputs, their features computed in batches."""
        if stage not in STAGES:
            raise ValueError(f"stage: must be one of {', '.join(STAGES)} (got {stage!r})")
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        tasks = list(tasks) if tasks is not None else [None] * len(inputs)
        logprobs = list(generator_logprobs) if generator_logprobs is not None else [None] * len(inputs)
        intentions = [
            Intention(i, o, stage, t, g, self.rule_violation(o, stage, t))
            for i, o, t, g in zip(inputs, outputs, tasks, logprobs, strict=True)
        ]
        features = self.features(intentions)
        for intention, row in zip(intentions, features, strict=True):
            intention.features = row
        return intentions

    def rule_violation(self, output: str, stage: str, task: str | None) -> str | None:
        """Why the rule layer refuses `output` (empty, too long, blocked, malformed), or None."""
        answer = answer_text(output, stage)
        if not answer:
            return "empty"
        if len(output) > self.settings.max_output_chars:
            return f"malformed: longer than {self.settings.max_output_chars} characters"
        lowered = output.lower()
        for word in self.settings.blocked:
            if word and word.lower() in lowered:
                return f"blocked: {word!r}"
        if stage == "refined" and not parse_steps(output).well_formed:
            return "malformed: steps do not parse"
        if not self._extractable(answer, task):
            return "malformed: no answer in the family's format"
        return None

    def _extractable(self, answer: str, task: str | None) -> bool:
        if task is not None:
            return self.verifier.for_task(task).extract(answer) is not None
        return any(get_family(name).extract(answer) is not None for name in FAMILIES)

    def features(self, intentions: Sequence[Intention]) -> torch.Tensor:
        """Feature rows: [pooled hidden] + cheap signals + [task one-hot], from the frozen base model."""
        if not intentions:
            return torch.zeros(0, len(self.feature_names()))
        answers = [answer_text(x.output, x.stage) for x in intentions]
        with self.base_context():
            scores = score_outputs(
                self.base_model,
                self.tokenizer,
                [x.input for x in intentions],
                answers,
                self.settings.batch_size,
                hidden=self.settings.use_hidden,
            )
        cheap = torch.tensor(
            [
                [float(x.rule is None), lp, float(len(a)), float(len(x.output))]
                for x, a, lp in zip(intentions, answers, scores.mean_logprob.tolist(), strict=True)
            ]
        )
        parts = [cheap]
        if self.settings.use_hidden and scores.pooled_hidden is not None:
            parts.insert(0, scores.pooled_hidden)
        if self.settings.use_task:
            onehot = torch.zeros(len(intentions), len(self.tasks))
            for row, intention in enumerate(intentions):
                if intention.task in self.tasks:
                    onehot[row, self.tasks.index(intention.task)] = 1.0
            parts.append(onehot)
        return torch.cat(parts, dim=1)

    def feature_names(self) -> list[str]:
        """Names of the feature columns, in order."""
        hidden = (
            [f"hidden_{i}" for i in range(int(self.base_model.config.hidden_size))] if self.settings.use_hidden else []
        )
        tasks = [f"task_{t}" for t in self.tasks] if self.settings.use_task else []
        return [*hidden, *CHEAP_FEATURES, *tasks]

    # ------------------------------------------------------------------------------------------ decisions
    def tensions(self, intentions: Sequence[Intention]) -> torch.Tensor:
        """Tension of each intention: 1 for rule violations, else the calibrated P(wrong)."""
        if self.gate is None:
            raise ValueError("limen: not fitted (call Limen.fit or Limen.load first)")
        if not intentions:
            return torch.zeros(0)
        features = torch.stack([self._features_of(x) for x in intentions])
        tension = self.gate.tension(features)
        refused = torch.tensor([x.rule is not None for x in intentions])
        return torch.where(refused, torch.ones_like(tension), tension)

    def _features_of(self, intention: Intention) -> torch.Tensor:
        if intention.features is None:
            intention.features = self.features([intention])[0]
        return intention.features

    def validate_intention(self, intention: Intention) -> Decision:
        """Approve or refuse one intention."""
        return self.validate_intentions([intention])[0]

    def validate_intentions(
        self,
        intentions: Sequence[Intention],
        threshold: float | Sequence[float] | None = None,
        refined_threshold: float | None = None,
    ) -> list[Decision]:
        """Decisions for many intentions; `threshold` (one value, or one per intention) overrides the coarse one,
        `refined_threshold` the one refined outputs are approved below (`settings.refined_threshold`)."""
        tensions = self.tensions(intentions).tolist()
        if isinstance(threshold, Sequence) and len(threshold) != len(intentions):
            raise ValueError(f"validate_intentions: {len(threshold)} thresholds for {len(intentions)} intentions")
        overrides = list(threshold) if isinstance(threshold, Sequence) else [threshold] * len(intentions)
        decisions = []
        for intention, tension, override in zip(intentions, tensions, overrides, strict=True):
            if intention.rule is not None:
                decisions.append(Decision(False, 1.0, intention.rule))
                continue
            if intention.stage == "refined":
                limit = self.settings.refined_threshold if refined_threshold is None else refined_threshold
            else:
                limit = self.threshold if override is None else override
            if tension <= limit:
                decisions.append(Decision(True, tension, f"approved: tension {tension:.3f} <= {limit:.3f}"))
            else:
                decisions.append(Decision(False, tension, f"tension {tension:.3f} > {limit:.3f}"))
        return decisions

    def get_alternative_or_silence(
        self, intention: Intention, alternatives: Sequence[Intention] = (), decision: Decision | None = None
    ) -> Fallback:
        """For a refused intention: the least-tense alternative that passes the rules below the silence
        threshold, else silence (`settings.silence_text`)."""
        refused = decision if decision is not None else self.validate_intention(intention)
        candidates = [x for x in alternatives if x.rule is None]
        if candidates:
            tensions = self.tensions(candidates).tolist()
            best = min(range(len(candidates)), key=lambda i: (tensions[i], i))
            if tensions[best] <= self.settings.silence_threshold:
                chosen = candidates[best]
                return Fallback(
                    chosen.output,
                    chosen.stage,
                    Decision(True, tensions[best], f"alternative: {chosen.stage} (tension {tensions[best]:.3f})"),
                )
        reason = f"silence: {intention.stage} refused ({refused.reason}), no acceptable alternative"
        return Fallback(self.settings.silence_text, None, Decision(False, refused.tension, reason))

    # ------------------------------------------------------------------------------------------ fitting
    def fit(self, train_pairs: Sequence[dict[str, Any]], val_pairs: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Fit on train pairs, calibrate and choose the threshold on val's greedy answers; return val metrics.

        Pairs are `cascade_pairs` rows (`prompt`, `coarse`, `task`, `coarse_correct`, `source`); the train pairs'
        tasks become the one-hot columns. Val rows with `source == "greedy"` are the deployment distribution;
        when val has none, all val rows are used.
        """
        if not train_pairs or not val_pairs:
            raise ValueError(f"limen: needs train and val pairs (got {len(train_pairs)} and {len(val_pairs)})")
        settings = self.settings
        self.tasks = sorted({p["task"] for p in train_pairs})
        train_intentions = self._coarse_intentions(train_pairs)
        train_x = torch.stack([x.features for x in train_intentions if x.features is not None])
        train_y = torch.tensor([float(not p["coarse_correct"]) for p in train_pairs])
        self.gate = fit_logistic(train_x, train_y, settings.l2, settings.max_iter)
        val = [p for p in val_pairs if p.get("source", "greedy") == "greedy"] or list(val_pairs)
        calibration, thresholding = disjoint_halves(val)
        cal_x = torch.stack([x.features for x in self._coarse_intentions(calibration) if x.features is not None])
        cal_y = torch.tensor([float(not p["coarse_correct"]) for p in calibration])
        self.gate.calibration = fit_calibration(self.gate.logits(cal_x), cal_y, settings.calibration)
        tension = self.tensions(self._coarse_intentions(thresholding)).tolist()
        correct = [bool(p["coarse_correct"]) for p in thresholding]
        self.threshold = choose_threshold(tension, correct, settings.break_rate_budget)
        # ECE/AUROC on the threshold half (out of sample for the calibration); the break rate of the chosen
        # threshold on the calibration half (out of sample for the threshold)
        metrics = gate_metrics(tension, correct, self.threshold, settings.ece_bins)
        held = gate_metrics(
            self.tensions(self._coarse_intentions(calibration)).tolist(),
            [bool(p["coarse_correct"]) for p in calibration],
            self.threshold,
            settings.ece_bins,
            prefix="calibration_half",
        )
        metrics.update(held)
        metrics["val_in_sample_worst_case_break_rate"] = metrics.pop("val_worst_case_break_rate")
        metrics["val_worst_case_break_rate"] = held["calibration_half_worst_case_break_rate"]
        metrics["calibration_items"], metrics["threshold_items"] = float(len(calibration)), float(len(thresholding))
        train_tension = self.tensions(train_intentions).tolist()
        metrics["train_auroc"] = auroc(train_tension, [not p["coarse_correct"] for p in train_pairs])
        metrics["threshold"] = self.threshold
        metrics["features"] = float(train_x.shape[1])
        return metrics

    def _coarse_intentions(self, pairs: Sequence[dict[str, Any]]) -> list[Intention]:
        return self.create_intentions(
            [p["prompt"] for p in pairs],
            [p["coarse"] for p in pairs],
            "coarse",
            [p["task"] for p in pairs],
            [p.get("coarse_logprob") for p in pairs],
        )

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """Write the fitted gate (safetensors) and its settings, tasks and threshold (JSON), atomically."""
        if self.gate is None:
            raise ValueError("limen: not fitted, nothing to save")
        with atomic_directory(folder) as tmp:
            tensors = {
                "weight": self.gate.weight,
                "bias": self.gate.bias.reshape(1),
                "mean": self.gate.mean,
                "std": self.gate.std,
                "calibration": self.gate.calibration,
            }
            save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS_FILE))
            meta = {
                "settings": self.settings.model_dump(mode="json"),
                "tasks": self.tasks,
                "threshold": self.threshold,
                "feature_names": self.feature_names(),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            (tmp / "README.md").write_text(
                "# LIMEN gate\n\nNot a language model: a calibrated classifier over the frozen coarse model's "
                "features that says whether its output is wrong (`limen.safetensors`: weights, normalisation, "
                "calibration; `limen.json`: settings, threshold, feature names). Load it with "
                "`cascadelab.cascade.limen.Limen.load(folder, coarse_model)`.\n"
            )

    @classmethod
    def load(
        cls,
        folder: str | Path,
        base_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        verifier: FamilyVerifier,
        base_context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> Limen:
        """Load a saved gate onto `base_model` (the same frozen model it was fitted with)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {META_FILE} (run the limen stage)")
        meta = json.loads((folder / META_FILE).read_text())
        tensors = load_file(str(folder / WEIGHTS_FILE))
        gate = LimenGate(tensors["weight"], tensors["bias"][0], tensors["mean"], tensors["std"], tensors["calibration"])
        limen = cls(
            base_model,
            tokenizer,
            verifier,
            LimenSettings.model_validate(meta["settings"]),
            meta["tasks"],
            gate,
            float(meta["threshold"]),
            base_context,
        )
        if len(limen.feature_names()) != gate.weight.numel():
            raise ValueError(f"{folder}: gate has {gate.weight.numel()} weights, base model gives a different width")
        return limen


# ---------------------------------------------------------------------------------------------- fitting
def fit_logistic(features: torch.Tensor, labels: torch.Tensor, l2: float, max_iter: int) -> LimenGate:
    """L2 logistic regression on standardised features by L-BFGS (deterministic: zero init, full batch)."""
    if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise ValueError(f"limen: {features.shape[0]} feature rows for {labels.shape[0]} labels")
    x = features.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    y = labels.double()
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    prior = y.mean().clamp(1e-4, 1 - 1e-4)
    bias = torch.log(prior / (1 - prior)).reshape(()).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LimenGate(weight.detach().float(), bias.detach().float(), mean.float(), std.float())


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, method: str, max_iter: int = 100) -> torch.Tensor:
    """(a, b) of p = σ(a·logit + b) fitted on held-out data: Platt (a, b), temperature (a only) or none."""
    if method == "none" or labels.numel() == 0 or labels.min() == labels.max():
        return torch.tensor([1.0, 0.0])
    x, y = logits.double().detach(), labels.double()
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=method == "platt")
    optimizer = torch.optim.LBFGS([log_a, b] if method == "platt" else [log_a], max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(log_a.exp() * x + b, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.tensor([float(log_a.detach().exp()), float(b.detach())])


def disjoint_halves(pairs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Val pairs split by prompt (md5 parity: a prompt's rows stay together) into the calibration half and
    the threshold half, so each of the two choices is measured out of sample on the other half."""
    calibration: list[dict[str, Any]] = []
    thresholding: list[dict[str, Any]] = []
    for pair in pairs:
        digest = hashlib.md5(str(pair["prompt"]).encode("utf-8")).digest()
        (calibration if digest[0] % 2 == 0 else thresholding).append(pair)
    if not calibration or not thresholding:
        raise ValueError(f"limen: val needs prompts in both halves (got {len(calibration)} and {len(thresholding)})")
    return calibration, thresholding


def choose_threshold(
    tension: Sequence[float], correct: Sequence[bool], budget: float, refined_correct: Sequence[bool] | None = None
) -> float:
    """Lowest threshold whose break rate (right outputs sent on and then wrong, over right outputs) ≤ budget.

    Items with tension above the threshold are sent to the refiner. Without `refined_correct` every right
    item sent on counts as broken (the worst case, before a refiner exists). When even sending everything
    fits, the result lies just below the lowest tension; when nothing does, it is the highest tension.
    """
    if len(tension) != len(correct) or (refined_correct is not None and len(refined_correct) != len(correct)):
        raise ValueError("choose_threshold: tension, correct and refined_correct must have one value per item")
    if not tension:
        return 1.0
    right = max(sum(bool(c) for c in correct), 1)
    broken_if_sent = [bool(c) and (refined_correct is None or not refined_correct[i]) for i, c in enumerate(correct)]
    items = sorted(zip(tension, broken_if_sent, strict=True), key=lambda item: -item[0])
    best, breaks, index = max(tension), 0, 0
    while index < len(items):
        value = items[index][0]
        if breaks / right > budget:  # sending every item above `value` already breaks too much
            return best
        best = value
        while index < len(items) and items[index][0] == value:
            breaks += items[index][1]
            index += 1
    return best if breaks / right > budget else min(tension) - 1e-6


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve of `scores` for `positives` (ties count half); NaN with one class."""
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    if not pos or not neg:
        return float("nan")
    s = torch.tensor(list(scores), dtype=torch.float64)
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for value in torch.unique(s):  # average ranks over ties
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    mask = torch.tensor(list(positives))
    return float((ranks[mask].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def expected_calibration_error(probs: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float:
    """ECE: bin-weighted |mean predicted − observed rate| over `bins` equal-width probability bins."""
    if not probs:
        return float("nan")
    p = torch.tensor(list(probs), dtype=torch.float64)
    y = torch.tensor([float(x) for x in labels], dtype=torch.float64)
    index = (p * bins).long().clamp(0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += float(mask.sum()) * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return total / len(p)


def gate_metrics(
    tension: Sequence[float], correct: Sequence[bool], threshold: float, bins: int, prefix: str = "val"
) -> dict[str, float]:
    """AUROC for "wrong", ECE, approval rate and the worst-case break rate at `threshold`."""
    wrong = [not c for c in correct]
    approved = [t <= threshold for t in tension]
    right = max(sum(correct), 1)
    return {
        f"{prefix}_auroc": auroc(tension, wrong),
        f"{prefix}_ece": expected_calibration_error(tension, wrong, bins),
        f"{prefix}_approval_rate": sum(approved) / max(len(tension), 1),
        f"{prefix}_worst_case_break_rate": sum(c and not a for c, a in zip(correct, approved, strict=True)) / right,
        f"{prefix}_wrong_sent_rate": sum(w and not a for w, a in zip(wrong, approved, strict=True))
        / max(sum(wrong), 1),
        f"{prefix}_coarse_error_rate": sum(wrong) / max(len(wrong), 1),
    }


@dataclass
class LimenOutcome:
    """A fitted LIMEN and its metrics."""

    limen: Limen
    metrics: dict[str, float]


def run_limen(
    base_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    verifier: FamilyVerifier,
    train_pairs: Sequence[dict[str, Any]],
    val_pairs: Sequence[dict[str, Any]],
    settings: LimenSettings,
    output_dir: str | Path,
) -> LimenOutcome:
    """The stage's logic: fit LIMEN on the pairs (`Limen.fit`), save it to `output_dir` (e.g. models/limen)."""
    limen = Limen(base_model, tokenizer, verifier, settings)
    metrics = limen.fit(train_pairs, val_pairs)
    limen.save(output_dir)
    return LimenOutcome(limen, metrics)
