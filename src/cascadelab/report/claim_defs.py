"""The seed claims the pipeline measures: which figures decide each one, its per-item columns, and its compute.

Compute is analytic where a stage records no FLOPs: training ≈ 6 × parameters × training tokens (forward
2, backward 4), inference ≈ 2 × parameters per generated or scored token. Effects are in the unit of the
claim's threshold in params.yaml (`claims:`): EM differences in percentage points, ratios as plain ratios.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cascadelab.report.claims import ClaimDef, Compute, Figures, ItemColumns

Means = Mapping[str, Any]


def _get(figures: Figures, stage: str, *keys: str) -> float | None:
    """A number at `keys` inside a stage's figures, or None where it is missing."""
    value: Any = figures.get(stage, {})
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return None if value is None or isinstance(value, bool) else float(value)


def _times(*factors: float | None) -> float | None:
    return None if any(f is None for f in factors) else math.prod(f for f in factors if f is not None)


def _train(params: float | None, tokens: float | None, how: str = "6 × parameters × training tokens") -> Compute:
    return {"params": params, "train_tokens": tokens, "train_flops": _times(6.0, params, tokens), "how": how}


def _flag(row: Mapping[str, Any], key: str) -> float:
    return 1.0 if row[key] else 0.0


def _em_points(means: Means) -> Any:
    return 100.0 * (means["system"] - means["baseline"])


def _ratio(means: Means) -> Any:
    return means["system"] / means["baseline"]


def _ppl_ratio(means: Means) -> Any:
    return math.e ** (means["system_nll"] / means["system_tokens"] - means["baseline_nll"] / means["baseline_tokens"])


def _em_items(stage: str, system: str, baseline: str, baseline_stage: str | None = None) -> ItemColumns:
    """Per-item exact match of two systems (`stage.key` booleans), paired by test item."""
    other = baseline_stage or stage
    return ItemColumns(
        {"system": lambda r: _flag(r, f"{stage}.{system}"), "baseline": lambda r: _flag(r, f"{other}.{baseline}")},
        _em_points,
        tuple(dict.fromkeys((stage, other))),
    )


def _ppl_items(stage: str, system: str, baseline: str) -> ItemColumns:
    """Per-item summed response NLL and token counts of two models, for a ratio of test perplexities."""
    return ItemColumns(
        {
            "system_nll": lambda r: float(r[f"{stage}.{system}_nll"]),
            "system_tokens": lambda r: float(r[f"{stage}.{system}_tokens"]),
            "baseline_nll": lambda r: float(r[f"{stage}.{baseline}_nll"]),
            "baseline_tokens": lambda r: float(r[f"{stage}.{baseline}_tokens"]),
        },
        _ppl_ratio,
        (stage,),
    )


# ---- the cascade (cascade_eval against coarse_sft, refiner) ------------------------------------------------
CASCADE_INFER = (
    "cascade_eval's FLOPs per test item: 2 × parameters × tokens read and written by the coarse pass, "
    "LIMEN's scoring passes and the refiner pass (the refiners have the coarse model's size)"
)


def _cascade_infer(figures: Figures, mode: str) -> Compute:
    params = _get(figures, "coarse_sft", "params")
    tokens = _get(figures, "cascade_eval", f"tokens_per_item_{mode}")
    flops = _get(figures, "cascade_eval", f"flops_per_item_{mode}")
    return {"params": params, "tokens_per_item": tokens, "inference_flops_per_item": flops, "how": CASCADE_INFER}


def _cascade_vs(mode: str, baseline_mode: str) -> Any:
    return lambda f: (_cascade_infer(f, mode), _cascade_infer(f, baseline_mode))


def _cascade_vs_control(figures: Figures) -> tuple[Compute, Compute]:
    params = _get(figures, "coarse_sft", "params")
    coarse_tokens = _get(figures, "coarse_sft", "train_tokens")
    refiner_tokens = _get(figures, "refiner", "train_tokens")
    control_tokens = _get(figures, "refiner", "control_train_tokens")
    both = None if coarse_tokens is None or refiner_tokens is None else coarse_tokens + refiner_tokens
    more = None if coarse_tokens is None or control_tokens is None else coarse_tokens + control_tokens
    return (
        _train(params, both, "6 × coarse parameters × (coarse + refiner training tokens)"),
        _train(params, more, "6 × coarse parameters × (coarse + coarse_more training tokens)"),
    )


def _cascade_values(system: str, baseline: str) -> Any:
    return lambda f: (_get(f, "cascade_eval", system), _get(f, "cascade_eval", baseline))


def _break_rate(means: Means) -> Any:
    return 100.0 * means["broken"] / means["right"]


def _draft_unread(figures: Figures) -> str | None:
    if figures.get("params", {}).get("refiner.format.use_coarse") is False:
        return "the refiner of this run is trained and run without the draft (refiner.format.use_coarse: false)"
    return None


CASCADE_CLAIMS = [
    ClaimDef(
        "cascade_fixes_coarse_errors", "the cascade fixes coarse errors", "Transformer² cascade (gated)",
        "coarse_only", "test EM, points", "difference", _cascade_values("em_cascade", "em_coarse"),
        _em_items("cascade_eval", "cascade_correct", "coarse_correct"), compute=_cascade_vs("cascade", "coarse"),
    ),
    ClaimDef(
        "cascade_rarely_breaks", "the cascade rarely breaks what the coarse model got right",
        "Transformer² cascade (gated)", "coarse_only (breaks nothing by definition)",
        "coarse-right test items broken, %", "value", lambda f: (_get(f, "cascade_eval", "break_rate_cascade"), 0.0),
        ItemColumns(
            {"right": lambda r: _flag(r, "cascade_eval.coarse_correct"),
             "broken": lambda r: float(r["cascade_eval.coarse_correct"] and not r["cascade_eval.cascade_correct"])},
            _break_rate, ("cascade_eval",),
        ),
        compute=_cascade_vs("cascade", "coarse"),
    ),
    ClaimDef(
        "cascade_beats_equal_compute", "the cascade beats the coarse model given the refiner's training compute",
        "Transformer² cascade (gated)", "coarse_more (coarse model trained on the refiner's budget)",
        "test EM, points", "difference", _cascade_values("em_cascade", "em_control"),
        _em_items("cascade_eval", "cascade_correct", "control_correct"), compute=_cascade_vs_control,
    ),
    ClaimDef(
        "reading_the_draft_helps", "reading the coarse draft helps the refiner", "always_refine (reads the draft)",
        "skip_coarse (the no-draft refiner alone: same steps and data, empty draft slot)", "test EM, points",
        "difference",
        _cascade_values("em_refined", "em_skip_coarse"),
        _em_items("cascade_eval", "refined_correct", "skip_coarse_correct"),
        compute=_cascade_vs("refined", "skip_coarse"), unmeasured=_draft_unread,
    ),
    ClaimDef(
        "gate_saves_compute", "the LIMEN gate saves compute", "Transformer² cascade (gated)", "always_refine",
        "generated tokens per test item, ratio", "ratio",
        _cascade_values("tokens_per_item_cascade", "tokens_per_item_refined"),
        ItemColumns(
            {"system": lambda r: float(r["cascade_eval.cascade_tokens"]),
             "baseline": lambda r: float(r["cascade_eval.refined_tokens"])},
            _ratio, ("cascade_eval",),
        ),
        compute=_cascade_vs("cascade", "refined"),
    ),
    ClaimDef(
        "gate_keeps_accuracy", "the gate costs little accuracy", "Transformer² cascade (gated)", "always_refine",
        "test EM, points", "difference", _cascade_values("em_cascade", "em_refined"),
        _em_items("cascade_eval", "cascade_correct", "refined_correct"), compute=_cascade_vs("cascade", "refined"),
    ),
    ClaimDef(
        "gate_matches_skip_coarse", "the gated cascade matches the refiner alone",
        "Transformer² cascade (gated)", "skip_coarse (the no-draft refiner on every routed item, no coarse pass)",
        "test EM, points", "difference", _cascade_values("em_cascade", "em_skip_coarse"),
        _em_items("cascade_eval", "cascade_correct", "skip_coarse_correct"),
        compute=_cascade_vs("cascade", "skip_coarse"),
    ),
]  # fmt: skip


# ---- LEGO, ACOC, the hybrid -------------------------------------------------------------------------------
def _lego_compute(figures: Figures) -> tuple[Compute, Compute]:
    params, base_params = _get(figures, "lego_phase2", "params"), _get(figures, "lego_phase2", "baseline_params")
    total = _get(figures, "lego_phase2", "lego_train_flops")  # phase 1 + hard-example collection + phase 2
    how = "recorded training FLOPs; inference 2 × parameters × counted routed FLOPs over full depth's"
    share = _get(figures, "lego_phase2", "compute_cost")
    return (
        {"params": params, "train_flops": total,
         "inference_flops_per_token": _times(2.0, params, share), "how": how},
        {"params": base_params, "train_flops": _get(figures, "lego_phase2", "baseline_train_flops"),
         "inference_flops_per_token": _times(2.0, base_params), "how": how},
    )  # fmt: skip


def _acoc_train(figures: Figures, arm: str) -> Compute:
    return {"params": _get(figures, "acoc", "arms", arm, "params"),
            "train_flops": _get(figures, "acoc", "arms", arm, "train_flops"),
            "how": "analytic training FLOPs per step (models/acoc/flops.py), one budget for every arm"}  # fmt: skip


OTHER_CLAIMS = [
    ClaimDef(
        "lego_exits_early_at_little_loss", "LEGO exits early at little loss", "LEGO (routed early exit)",
        "4-layer causal model (full depth, LEGO's training FLOPs)", "test perplexity, ratio", "ratio",
        lambda f: (_get(f, "lego_phase2", "ppl"), _get(f, "lego_phase2", "baseline_ppl")),
        _ppl_items("lego_phase2", "routed", "baseline"), compute=_lego_compute,
    ),
    ClaimDef(
        "growth_matches_static", "growth reaches the large model's quality at equal training FLOPs",
        "ACOC study G (S grown by fixed function-preserving splits)",
        "ACOC study L (the large size trained from the start, same FLOPs)", "test EM (add+sub+mul+expr), points",
        "difference", lambda f: (_get(f, "acoc", "arms", "G", "em"), _get(f, "acoc", "arms", "L", "em")),
        _em_items("acoc", "G", "L"), compute=lambda f: (_acoc_train(f, "G"), _acoc_train(f, "L")),
    ),
    ClaimDef(
        "hybrid_matches_transformer", "the hybrid RNN-Transformer matches the transformer",
        "hybrid RNN-Transformer (hybrid_rnn)", "coarse Llama of the same size (coarse_sft)", "test EM, points",
        "difference", lambda f: (_get(f, "hybrid_rnn", "em"), _get(f, "coarse_sft", "em")),
        _em_items("hybrid_rnn", "correct", "correct", "coarse_sft"),
        compute=lambda f: (_train(_get(f, "hybrid_rnn", "params"), _get(f, "hybrid_rnn", "train_tokens")),
                           _train(_get(f, "coarse_sft", "params"), _get(f, "coarse_sft", "train_tokens"))),
    ),
]  # fmt: skip


# ---- SIGMA ------------------------------------------------------------------------------------------------
def _sigma_train(figures: Figures, model: str) -> Compute:
    return _train(
        _get(figures, "sigma_pretrain", f"{model}_params"), _get(figures, "sigma_pretrain", f"{model}_train_tokens")
    )


def _bitlinear_off(figures: Figures) -> str | None:
    if _get(figures, "sigma_pretrain", "sigma_feature_bitlinear_enabled"):
        return "this run trains SigmaLLM with BitLinear but no full-precision twin of the same model"
    return "this run trains SigmaLLM in full precision only (no BitLinear variant against its full-precision twin)"


def _rl_compute(figures: Figures) -> tuple[Compute, Compute]:
    params = _get(figures, "sigma_rl", "params")
    how = "6 × parameters × LM tokens + (2 + 6 × grpo.num_iterations) × parameters × RL prompt+completion tokens"
    return ({"params": params, "train_tokens": _get(figures, "sigma_rl", "train_tokens"),
             "rl_tokens": _get(figures, "sigma_rl", "rl_tokens"), "lm_steps": _get(figures, "sigma_rl", "lm_steps"),
             "rl_steps": _get(figures, "sigma_rl", "rl_steps"), "train_flops": _get(figures, "sigma_rl", "train_flops"),
             "how": how},
            {"params": params, "train_tokens": _get(figures, "sigma_rl", "control_train_tokens"),
             "lm_steps": _get(figures, "sigma_rl", "control_lm_steps"),
             "train_flops": _get(figures, "sigma_rl", "control_train_flops"),
             "how": "6 × parameters × LM tokens (the same LM batches, no RL update)"})  # fmt: skip


def _rl_items() -> ItemColumns:
    """Per held-out reporting prompt: the RL model's reward and the LM-only control's."""
    return ItemColumns(
        {"system": lambda r: float(r["sigma_rl.rl_reward"]), "baseline": lambda r: float(r["sigma_rl.control_reward"])},
        lambda m: m["system"] - m["baseline"],
        ("sigma_rl",),
        where=lambda r: r["sigma_rl.split"] == "val_report",
    )


def _rl_uncontrolled(figures: Figures) -> str | None:
    if "sigma_rl" in figures and _get(figures, "sigma_rl", "control_heldout_reward") is None:
        return "this run of sigma_rl trains no LM-only control (sigma_rl.eval.control: false)"
    return None


def _rl_notes(figures: Figures) -> str:
    start, end = _get(figures, "sigma_rl", "start_heldout_reward"), _get(figures, "sigma_rl", "end_heldout_reward")
    em = [_get(figures, "sigma_rl", f"rl_vs_control_em{k}") for k in ("", "_low", "_high")]
    parts = []
    if start is not None and end is not None:
        parts.append(f"secondary: start {start:.3f} -> end {end:.3f} (no control)")
    if None not in em:
        parts.append(f"math EM RL - control {em[0]:+.1f} points [{em[1]:+.1f}, {em[2]:+.1f}]")
    return "; ".join(parts)


SIGMA_CLAIMS = [
    ClaimDef(
        "sigma_beats_llama", "SIGMA beats a same-size Llama", "SigmaLLM", "Llama baseline (same size, same batches)",
        "test perplexity, ratio", "ratio",
        lambda f: (_get(f, "sigma_pretrain", "sigma_test_ppl"), _get(f, "sigma_pretrain", "baseline_test_ppl")),
        _ppl_items("sigma_pretrain", "sigma", "baseline"),
        compute=lambda f: (_sigma_train(f, "sigma"), _sigma_train(f, "baseline")),
    ),
    ClaimDef(
        "bitlinear_costs_little", "BitLinear costs little", "SigmaLLM with BitLinear", "the same SigmaLLM in fp32",
        "test perplexity, ratio", "ratio", lambda f: (None, None), unmeasured=_bitlinear_off,
    ),
    ClaimDef(
        "muon_needs_fewer_steps", "the Muon family needs fewer steps", "SigmaLLM with a Muon-family optimizer",
        "the same model with AdamW", "optimizer steps to a common validation loss, ratio", "ratio",
        lambda f: (None, None),
        unmeasured=lambda f: "no stage trains one model under AdamW and a Muon-family optimizer to a common loss",
    ),
    ClaimDef(
        "grpo_improves_heldout_reward", "GRPO improves held-out reward", "SigmaLLM after sigma_rl (LM + GRPO steps)",
        "the LM-only control (same start, LM batches, steps and schedule, no GRPO update)",
        "mean held-out reward per reporting prompt", "difference",
        lambda f: (_get(f, "sigma_rl", "end_heldout_reward"), _get(f, "sigma_rl", "control_heldout_reward")),
        _rl_items(), compute=_rl_compute, unmeasured=_rl_uncontrolled,
        notes="the reward is read on the val prompts' reporting part; the meta-loop steers on the disjoint steering "
        "part",
        dynamic_notes=_rl_notes,
    ),
    ClaimDef(
        "draft_heads_speed_up", "draft heads speed up decoding", "SigmaLLM decoding with draft heads",
        "plain greedy decoding (1 token per forward pass)", "tokens per forward pass, ratio", "value",
        lambda f: (_get(f, "sigma_rl", "draft_tokens_per_forward"), 1.0),
        no_items_reason="sigma_rl records the acceptance over all drafts, not per prompt",
        compute=lambda f: (
            {"params": _get(f, "sigma_pretrain", "sigma_params"), "how": "draft heads' parameters not recorded"},
            {"params": _get(f, "sigma_pretrain", "sigma_params"), "how": "same model, no heads"},
        ),
    ),
]  # fmt: skip


SEED_CLAIMS: list[ClaimDef] = [*CASCADE_CLAIMS, *OTHER_CLAIMS, *SIGMA_CLAIMS]
