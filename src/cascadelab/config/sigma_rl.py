"""The `sigma_rl` section: GRPO/GSPO on the pretrained SigmaLLM mixed with LM steps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import StrictModel, check_at_most, check_mix, section_field
from cascadelab.config.fields import CompletionTemperature, GenerationBatchSize, PredictionSample
from cascadelab.config.sigma_pretrain import (
    SIGMA_PROFILES,
    SigmaFeatureParams,
    SigmaLoopParams,
    SigmaProfile,
    SigmaTrainParams,
    SigmaWarmupSteps,
    _merge_under,
    check_sigma_compatibility,
)


class SigmaRLFeatureParams(SigmaFeatureParams):
    """The loop's trainer features plus the RL subsystems, each counted in metrics.jsonl."""

    code_rl: bool = Field(True, description="code tasks in RL, verified by running the model's code in the sandbox")
    asym_verify: bool = Field(
        True, description="a cheap-check failure is final (never escalated); off: every output gets the full check"
    )
    causal_replay: bool = Field(
        True, description="prompts of high-advantage samples re-enter later RL batches by priority"
    )
    auto_mix: bool = Field(True, description="the RL share adapts to held-out reward progress every eval window")
    meta_loop: bool = Field(
        False,
        description="Uroboros: every window sets the lr factor and the RL-share change (replaces auto_mix's rule)",
    )
    research_log: bool = Field(
        False, description="one (hypothesis, change, expected, measured) cycle per window, a JSONL artifact"
    )
    self_improver: bool = Field(
        False, description="every window: new template problems; the model's verified answers become LM rows"
    )
    counterfactual_credit: bool = Field(
        False,
        description="C3O credit from reverting each layer's last RL update on a probe batch (needs c3o)",
    )
    fractal_nas: bool = Field(
        False, description="structural-variant trials at a tiny budget after the run (the winner is reported only)"
    )
    draft_heads: bool = Field(
        False, description="draft heads trained on the final model: acceptance rate and speed-up measured"
    )


class GRPOParams(StrictModel):
    """One GRPO (or GSPO) update through TRL's GRPOTrainer."""

    prompts_per_step: int = Field(
        2, gt=0, description="distinct prompts per RL update; the batch is prompts_per_step x num_generations"
    )
    num_generations: int = Field(
        4, ge=2, description="completions sampled per prompt (the group advantages are computed over)"
    )
    max_completion_length: int = Field(
        20, gt=0, description="tokens per sampled completion (a level-2 lambda is 16 characters + EOS)"
    )
    temperature: CompletionTemperature = 1.0
    importance_sampling_level: Literal["token", "sequence"] = Field("token", description="token: GRPO | sequence: GSPO")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference model (0 loads no reference model)")
    epsilon: float = Field(0.2, gt=0, description="clipping range of the importance ratio")
    num_iterations: int = Field(
        1,
        ge=1,
        description="updates per generated batch (1: on-policy, the ratio is 1 and GSPO equals GRPO; "
        "> 1: the stored completions are re-used off-policy with importance weights)",
    )
    code_share: float = Field(
        0.5, ge=0, le=1, description="share of RL prompts drawn from the code tasks (ignored without features.code_rl)"
    )


class AutoMixParams(StrictModel):
    """The RL/LM mix: the share of loop steps that also take an RL update, moved by held-out reward."""

    initial_share: float = Field(
        0.3, ge=0, le=1, description="share of loop steps that also take an RL update at the start"
    )
    min_share: float = Field(0.1, ge=0, le=1, description="lowest RL share the mix may move to")
    max_share: float = Field(0.6, ge=0, le=1, description="highest RL share the mix may move to")
    step: float = Field(0.1, gt=0, le=1, description="change of the RL share per decision")
    min_gain: float = Field(0.005, ge=0, description="held-out reward gain below this counts as a plateau")
    lm_loss_tolerance: float = Field(
        0.05, ge=0, description="relative rise of the LM val loss that sends the mix back toward LM"
    )

    @model_validator(mode="after")
    def _check(self) -> AutoMixParams:
        check_at_most("min_share", self.min_share, "max_share", self.max_share)
        if not self.min_share <= self.initial_share <= self.max_share:
            raise ValueError(
                f"initial_share: {self.initial_share} must lie within [min_share, max_share] "
                f"([{self.min_share}, {self.max_share}])"
            )
        return self


class ReplayParams(StrictModel):
    """Causal replay of high-advantage samples."""

    capacity: int = Field(64, gt=0, description="samples the replay buffer holds (the lowest priority is evicted)")
    alpha: float = Field(1.0, ge=0, description="priority exponent: priority = (advantage - min_advantage) ** alpha")
    min_advantage: float = Field(0.0, description="a sample is admitted only when its advantage exceeds this")
    staleness_decay: float = Field(
        0.99,
        gt=0,
        le=1,
        description="priority is discounted by staleness_decay ** (policy steps since it was generated)",
    )
    per_step: int = Field(1, ge=0, description="replayed prompts per RL update (each replaces a fresh prompt)")


class SandboxParams(StrictModel):
    """Limits of one sandboxed run of model-written code."""

    wall_seconds: float = Field(2.0, gt=0, description="wall-clock limit of one run of model-written code, in seconds")
    cpu_seconds: int = Field(2, gt=0, description="CPU-time limit (RLIMIT_CPU) of one run, in seconds")
    memory_mb: int = Field(256, gt=0, description="address-space limit of one run, in MiB")


class EvolutionParams(StrictModel):
    """Budgets of the evolution subsystems (each switched in `features`)."""

    self_improver_problems: int = Field(
        16, gt=0, description="new template problems per window (features.self_improver)"
    )
    nas_trials: int = Field(
        4, gt=0, description="structural-variant trials of the one coarse round (features.fractal_nas)"
    )
    nas_steps: int = Field(20, gt=0, description="training steps per NAS trial")
    draft_num_heads: int = Field(2, gt=0, description="draft heads trained (features.draft_heads)")
    draft_steps: int = Field(100, gt=0, description="training steps of the draft heads")
    draft_learning_rate: float = Field(1.0e-3, gt=0, description="learning rate of the draft heads")
    draft_prompts: int = Field(32, gt=0, description="test prompts the speculative decoding is measured on")


class RLEvalParams(StrictModel):
    """Held-out reward (val) and the before/after test evaluation."""

    heldout_math: int = Field(128, gt=0, description="val prompts of the corpus in the held-out reward")
    heldout_code: int = Field(40, gt=0, description="val prompts of the code tasks in the held-out reward")
    steer_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="share of the held-out prompts (per kind, seeded) the meta-loop and mix steer on; "
        "the rest reports the held-out reward",
    )
    control: bool = Field(
        True, description="also train the LM-only control (same steps, data and schedule, no GRPO updates)"
    )
    batch_size: GenerationBatchSize = 256
    max_new_tokens: int = Field(
        20, gt=0, description="tokens generated per answer (a level-2 lambda is 16 characters + EOS)"
    )
    sample_predictions: PredictionSample = 32
    test_records: int = Field(
        0, ge=0, description="first N test records of each kind evaluated before and after RL (0: all)"
    )


class SigmaRLTrainParams(SigmaTrainParams):
    """The `sigma_rl` loop (defaults for RL on the pretrained model)."""

    max_steps: int = Field(
        400, gt=0, description="loop steps (every one an LM update, a share of them an RL update too)"
    )
    warmup_steps: SigmaWarmupSteps = 0
    eval_steps: int = Field(
        100,
        ge=0,
        description="steps between two held-out reward evaluations and mix decisions, plus one at the end (> 0)",
    )
    num_threads: int = Field(2, gt=0, description="torch CPU threads of the loop")
    parallel_baseline: bool = Field(False, description="unused by sigma_rl")


# sigma_rl's evolution subsystems (switched and counted by training/sigma_rl_evolution.py)
RL_EVOLUTION_SWITCHES = ("meta_loop", "research_log", "self_improver", "counterfactual_credit", "fractal_nas",
                         "draft_heads")  # fmt: skip
_RL_SWITCHES = ("code_rl", "causal_replay", "auto_mix", *RL_EVOLUTION_SWITCHES)
_RL_STANDARD = ("code_rl", "causal_replay", "auto_mix", "meta_loop", "research_log", "self_improver", "draft_heads")
SIGMA_RL_PROFILES: dict[str, dict[str, Any]] = {
    "minimal": {
        "optimizer": {"name": "adamw"},
        "features": {
            **SIGMA_PROFILES["minimal"]["features"],
            "asym_verify": True,
            **dict.fromkeys(_RL_SWITCHES, False),
        },
    },
    # what fits the stage's 4-minute budget: every RL subsystem but the C3O-only credit and NAS
    "standard": {
        "optimizer": {"name": "adamw"},
        "features": {
            **SIGMA_PROFILES["standard"]["features"],
            "asym_verify": True,
            **{name: name in _RL_STANDARD for name in _RL_SWITCHES},
        },
    },
    # every RL subsystem and trainer feature (the proof runs this)
    "full": {
        "optimizer": {"name": "c3o"},
        "features": {**SIGMA_PROFILES["full"]["features"], "asym_verify": True, **dict.fromkeys(_RL_SWITCHES, True)},
    },
}


class SigmaRLParams(SigmaLoopParams):
    """RL on the pretrained SigmaLLM (GRPO/GSPO through TRL, verifier rewards) mixed with LM steps.

    `profile` expands like `sigma_pretrain`'s (:data:`SIGMA_RL_PROFILES`; keys set in params.yaml win).
    """

    profile: SigmaProfile = Field(
        "standard",
        description="minimal | standard | full (every RL subsystem): expanded like sigma_pretrain's; keys set here win",
    )
    features: SigmaRLFeatureParams = section_field(SigmaRLFeatureParams)
    train: SigmaRLTrainParams = section_field(SigmaRLTrainParams)
    mix: dict[str, float] = Field(
        default_factory=lambda: {
            "add": 0.1,
            "sub": 0.1,
            "mul": 0.1,
            "expr": 0.1,
            "reverse": 0.1,
            "word": 0.1,
            "code": 0.4,
        },
        description="sampling weight of each task in the LM batches (code: the code tasks)",
    )
    grpo: GRPOParams = section_field(GRPOParams)
    auto_mix: AutoMixParams = section_field(AutoMixParams)
    replay: ReplayParams = section_field(ReplayParams)
    sandbox: SandboxParams = section_field(SandboxParams)
    format_weight: float = Field(0.1, ge=0, lt=1, description="share of the reward given for a well-formed answer")
    eval: RLEvalParams = section_field(RLEvalParams)
    evolution: EvolutionParams = section_field(EvolutionParams)

    @model_validator(mode="before")
    @classmethod
    def _expand_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("profile", "standard")
        return _merge_under(data, SIGMA_RL_PROFILES[name]) if name in SIGMA_RL_PROFILES else data

    @model_validator(mode="after")
    def _check(self) -> SigmaRLParams:
        check_mix(self.mix)
        if self.train.eval_steps == 0:
            raise ValueError("train.eval_steps: must be > 0 (the held-out reward and the mix are judged per window)")
        if self.features.counterfactual_credit and self.optimizer.name != "c3o":
            raise ValueError(
                f"features.counterfactual_credit: true needs optimizer.name: c3o (got {self.optimizer.name})"
            )
        check_sigma_compatibility(self)
        return self
