from pathlib import Path

import pytest

from cascadelab.config import ACOCParams, ParamsError, load_params, parse_params
from cascadelab.config.base import StrictModel, section_field

ROOT = Path(__file__).resolve().parents[3]


def test_repository_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.coarse_sft.model.family == "llama"
    assert params.lego.model.phase2_layers > params.lego.model.phase1_layers
    assert params.refiner.per_family and set(params.refiner.family_steps) <= set(params.refiner.route_tasks)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"coarse_sft": {"trian": {}}}, "params.yaml: coarse_sft.trian: unknown key"),
        (
            {"coarse_sft": {"train": {"bf16": "yes"}}},
            "params.yaml: coarse_sft.train.bf16: must be a boolean (got the string 'yes') "
            "— train in bfloat16 autocast (only on hardware with fast bf16; ~25x slower on this CPU)",
        ),
        (
            {"coarse_sft": {"train": {"num_threads": True}}},
            "params.yaml: coarse_sft.train.num_threads: must be an integer (got the boolean true) "
            "— torch CPU threads of the training process",
        ),
        (
            {"coarse_sft": {"train": {"num_threads": "2"}}},
            "params.yaml: coarse_sft.train.num_threads: must be an integer (got the string '2') "
            "— torch CPU threads of the training process",
        ),
        (
            {"coarse_sft": {"train": {"max_steps": 10.0}}},
            "params.yaml: coarse_sft.train.max_steps: must be an integer (got the number 10.0) "
            "— optimizer steps of the run (the schedule is laid over exactly these)",
        ),
        (
            {"coarse_sft": {"train": {"learning_rate": "1e-3"}}},
            "params.yaml: coarse_sft.train.learning_rate: must be a number (got the string '1e-3') "
            "— AdamW peak learning rate, held after warm-up until the decay",
        ),
        (
            {"prepare": {"user_dataset": {"path": 3}}},
            "params.yaml: prepare.user_dataset.path: must be a string (got the number 3) "
            "— local JSONL file of question/answer records (set this or hf_name)",
        ),
        (
            {"sigma_pretrain": {"optimizer": {"muon": {"muon_nesterov": 1}}}},
            "params.yaml: sigma_pretrain.optimizer.muon.muon_nesterov: must be a boolean (got the number 1) "
            "— Nesterov momentum in Muon's update",
        ),
        (
            {"launch": 2},
            "params.yaml: launch: must be a mapping (got the number 2) "
            "— how many processes a rank-aware training stage runs on (torchrun; gloo on CPU, NCCL on GPUs)",
        ),
        (
            {"coarse_sft": {"train": {"batch_size": "big"}}},
            "params.yaml: coarse_sft.train.batch_size: must be an integer (got the string 'big') "
            "— training sequences per optimizer step",
        ),
        (
            {"coarse_sft": {"train": {"learning_rate": -1}}},
            "params.yaml: coarse_sft.train.learning_rate: must be greater than 0 (got -1) "
            "— AdamW peak learning rate, held after warm-up until the decay",
        ),
        (
            {"prepare": {"families": {"div": {}}}},
            "params.yaml: prepare.families.div: unknown task family (known: add, sub, mul, expr, reverse, word)",
        ),
        (
            {"coarse_sft": {"model": {"hidden_size": 130}}},
            "params.yaml: coarse_sft.model.hidden_size: must be divisible by num_heads (130 % 4)",
        ),
        ({"coarse_sft": {"mix": {"add": -0.1}}}, "params.yaml: coarse_sft.mix.add: must be >= 0 (got -0.1)"),
        ({"bogus": 1}, "params.yaml: bogus: unknown key"),
        (
            {"coarse_sft": {"train": {"max_steps": 20}}},
            "params.yaml: coarse_sft.train.warmup_steps: 100 must be at most max_steps (20)",
        ),
        (
            {"hybrid_rnn": {"train": {"max_steps": 20}}},
            "params.yaml: hybrid_rnn.train.warmup_steps: 100 must be at most max_steps (20)",
        ),
        (
            {"refiner": {"family_steps": {"mul": 20}}},
            "params.yaml: refiner.train.warmup_steps: 50 must be at most family_steps.mul (20)",
        ),
        (
            {"lego": {"phase1": {"max_steps": 20}}},
            "params.yaml: lego.phase1.warmup_steps: 100 must be at most max_steps (20)",
        ),
        (
            {"acoc": {"cycles": 4, "steps_per_cycle": 20}},
            "params.yaml: acoc.lr_warmup_steps: 100 must be at most cycles x steps_per_cycle (80)",
        ),
        (
            {"sigma_rl": {"auto_mix": {"min_share": 0.7}}},
            "params.yaml: sigma_rl.auto_mix.min_share: 0.7 must be at most max_share (0.6)",
        ),
        (
            {"prepare": {"code": {"levels": [4]}}},
            "params.yaml: prepare.code.levels: each level must be 1, 2 or 3 (got 4)",
        ),
        (
            {"sigma_rl": {"optimizer": {"name": "adamw"}, "features": {"c3o_credit": True}}},
            "params.yaml: sigma_rl.features.c3o_credit: true needs optimizer.name: c3o (got adamw)",
        ),
        (
            {"sigma_rl": {"train": {"eval_steps": 0}}},
            "params.yaml: sigma_rl.train.eval_steps: must be > 0 "
            "(the held-out reward and the mix are judged per window)",
        ),
        (
            {"sigma_rl": {"auto_mix": {"initial_share": 0.9}}},
            "params.yaml: sigma_rl.auto_mix.initial_share: 0.9 must lie within [min_share, max_share] ([0.1, 0.6])",
        ),
        (
            {"sigma_rl": {"grpo": {"importance_sampling_level": "seq"}}},
            "params.yaml: sigma_rl.grpo.importance_sampling_level: must be 'token' or 'sequence' (got 'seq') "
            "— token: GRPO | sequence: GSPO",
        ),
        (
            {"sigma_rl": {"grpo": {"num_generations": 1}}},
            "params.yaml: sigma_rl.grpo.num_generations: must be greater than or equal to 2 (got 1) "
            "— completions sampled per prompt (the group advantages are computed over)",
        ),
        (
            {"sigma_rl": {"train": {"checkpoint_steps": 30, "logging_steps": 20}}},
            "params.yaml: sigma_rl.train.checkpoint_steps: 30 must be a multiple of train.logging_steps (20), "
            "so a checkpoint never splits a logging window",
        ),
        (
            {"coarse_sft": {"train": {"save_steps": 1010}}},
            "params.yaml: coarse_sft.train.save_steps: 1010 must be a multiple of logging_steps (50), "
            "so a resumed run logs the same curve",
        ),
        (
            {"sigma_pretrain": {"model": {"mamba_ratio": 0, "attention_ratio": 0}}},
            "params.yaml: sigma_pretrain.model.mamba_ratio: mamba_ratio and attention_ratio cannot both be 0",
        ),
        (
            {"sigma_pretrain": {"model": {"overrides": {"vocab_size": 9}}}},
            "params.yaml: sigma_pretrain.model.overrides.vocab_size: set from the corpus tokenizer, not from params",
        ),
        (
            {"sigma_pretrain": {"optimizer": {"name": "sgd"}}},
            "params.yaml: sigma_pretrain.optimizer.name: must be 'adamw', 'muon', 'normuon', 'adamuon', 'c3o' "
            "or 'gnprox' (got 'sgd') "
            "— adamw | muon | normuon | adamuon | c3o | gnprox (README's optimizer table)",
        ),
        (
            {"sigma_pretrain": {"optimizer": {"muon": {"muon_lr": 0}}}},
            "params.yaml: sigma_pretrain.optimizer.muon.muon_lr: must be greater than 0 (got 0) "
            "— Muon learning rate of the hidden 2-D weights",
        ),
        (
            {"lego": {"model": {"phase2_layers": 2}}},
            "params.yaml: lego.model.phase2_layers: must exceed phase1_layers=2 (got 2)",
        ),
        (
            {"lego": {"model": {"hidden_size": 132}}},
            "params.yaml: lego.model.hidden_size: must split into num_heads=4 heads of even size (got 132)",
        ),
        (
            {"lego": {"hard_examples": {"hard_example_ratio": 1.5}}},
            "params.yaml: lego.hard_examples.hard_example_ratio: must be less than 1 (got 1.5) "
            "— share of val response tokens whose exit confidence falls below the threshold",
        ),
        (
            {"lego": {"baseline": {"budget": "time"}}},
            "params.yaml: lego.baseline.budget: must be 'compute' or 'tokens' (got 'time') "
            "— compute: LEGO's training FLOPs | tokens: LEGO's supervised tokens",
        ),
        (
            {"lego": {"eval": {"tradeoff_exit_shares": [0.5, 2]}}},
            "params.yaml: lego.eval.tradeoff_exit_shares: each share must be in [0, 1] (got 2.0)",
        ),
        (
            {"hybrid_rnn": {"model": {"preset": "huge"}}},
            "params.yaml: hybrid_rnn.model.preset: must be 'small', 'seed' or 'tiny' (got 'huge') "
            "— small (1.08 M parameters) | seed (the seed design, ~33 M) | tiny (tests)",
        ),
        (
            {"hybrid_rnn": {"model": {"decoder_layers": 0}}},
            "params.yaml: hybrid_rnn.model.decoder_layers: must be greater than 0 (got 0) "
            "— Transformer decoder layers (null: the preset's)",
        ),
        (
            {"hybrid_rnn": {"eval": {"num_beams": 1}}},
            "params.yaml: hybrid_rnn.eval.num_beams: must be greater than or equal to 2 (got 1) "
            "— beams of the beam-search decoding",
        ),
        ({"hybrid_rnn": {"mix": {"word": -1}}}, "params.yaml: hybrid_rnn.mix.word: must be >= 0 (got -1.0)"),
        (
            {"refiner": {"mix": {"div": 1.0, "mul": 1.0, "word": 1.0}}},
            "params.yaml: refiner.mix.div: unknown task family (known: add, sub, mul, expr, reverse, word)",
        ),
        (
            {"refiner": {"route_tasks": ["expr"]}},
            "params.yaml: refiner.route_tasks: 'expr' is not trained (no weight > 0 in mix)",
        ),
        ({"refiner": {"family_steps": {"expr": 5}}}, "params.yaml: refiner.family_steps.expr: not a routed family"),
        (
            {"refiner": {"control": {"budget": "time"}}},
            "params.yaml: refiner.control.budget: must be 'steps' or 'tokens' (got 'time') "
            "— steps: as many optimizer steps as the refiner(s); tokens: as many training tokens",
        ),
        (
            {"limen": {"break_rate_budget": 2}},
            "params.yaml: limen.break_rate_budget: must be less than or equal to 1 (got 2) "
            "— max share of right val outputs the gate may send on (worst case: all broken)",
        ),
        (
            {"cascade_pairs": {"cross_fit": {"folds": 1}}},
            "params.yaml: cascade_pairs.cross_fit.folds: must be 0 (off) or >= 2 (got 1)",
        ),
        (
            {"cascade_eval": {"modes": ["normal"]}},
            "params.yaml: cascade_eval.modes: must include coarse_only (the reference for compute ratios)",
        ),
        ({"acoc": {"cycels": 8}}, "params.yaml: acoc.cycels: unknown key"),
        (
            {"acoc": {"growth": {"kind": "grow"}}},
            "params.yaml: acoc.growth.kind: must be 'auto', 'split' or 'widen' (got 'grow') — auto: split, then widen",
        ),
        (
            {"acoc": {"cycles": 0}},
            "params.yaml: acoc.cycles: must be greater than 0 (got 0) "
            "— training cycles (train -> checkpoint -> evaluate -> decide -> expand -> warm up)",
        ),
        (
            {"acoc": {"tasks": {"add": 0, "sub": 8}}},
            "params.yaml: acoc.tasks.sub: first cycle must be in [0, 7] (got 8)",
        ),
        ({"acoc": {"tasks": {"add": 2}}}, "params.yaml: acoc.tasks: at least one task must start at cycle 0"),
        (
            {"acoc": {"model": {"initial_experts": 5}}},
            "params.yaml: acoc.model.initial_experts: exceeds growth.max_experts (5 > 4)",
        ),
        (
            {"acoc": {"model": {"hidden_size": 66}}},
            "params.yaml: acoc.model.hidden_size: must be divisible by num_heads (66 % 4)",
        ),
        (
            {"acoc": {"warmup": {"force_share": 1.5}}},
            "params.yaml: acoc.warmup.force_share: must be less than or equal to 1 (got 1.5) "
            "— share of tokens forced to the new experts during the warm-up",
        ),
        (
            {"acoc": {"vote": {"ratio": 0}}},
            "params.yaml: acoc.vote.ratio: must be greater than 0 (got 0) "
            "— vote expand below ratio × the reference score",
        ),
        ({"acoc": {"continual": {"replay": 1}}}, "params.yaml: acoc.continual.replay: unknown key"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert str(error.value) == message
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"prepare": {"families": {"add": {"difficulties": "x"}}}},
            "params.yaml: prepare.families.add.difficulties: must be a list (got the string 'x') "
            "— difficulty levels (1..3) generated for this family, one corpus cell each",
        ),
        (
            {"sigma_pretrain": {"data": {"source": "hybrid", "stream": {"path": "p", "weight": 3}}}},
            "params.yaml: sigma_pretrain.data.stream.weight: must be less than or equal to 1 (got 3) "
            "— share of batches drawn from the stream",
        ),
    ],
)
def test_a_bad_value_error_ends_with_the_description_of_its_field(raw, message):
    """Descriptions are found through dict entries (families.add) and optional sections (stream)."""
    with pytest.raises(ParamsError) as excinfo:
        parse_params(raw)
    assert str(excinfo.value) == message


def test_acoc_section_defaults_are_the_growth_study_on_a_mix_with_mul_and_expr():
    params = load_params(ROOT / "params.yaml").acoc
    assert params == ACOCParams()  # params.yaml spells out the schema's (measured) defaults
    assert params.tasks == {"add": 0, "sub": 0, "mul": 0, "expr": 0} and len(params.seeds) == 5
    assert params.model.initial_experts == 1 and params.study.arms == ["S", "L", "G", "A"]


def test_ints_stay_numbers_and_lists_stay_pairs_under_strict_types():
    params = parse_params(
        {"coarse_sft": {"train": {"learning_rate": 1}}, "sigma_pretrain": {"optimizer": {"betas": [0, 0.9]}}}
    )
    assert params.coarse_sft.train.learning_rate == 1.0
    assert params.sigma_pretrain.optimizer.betas == (0.0, 0.9)


def test_hybrid_rnn_model_overrides_are_only_the_fields_set():
    params = parse_params({"hybrid_rnn": {"model": {"preset": "tiny", "d_model": 48, "context": "pooled"}}})
    assert params.hybrid_rnn.model.config_overrides() == {"context": "pooled", "initializer_range": 0.06, "d_model": 48}


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(bad)


def test_a_section_field_is_described_by_its_class_docstring_unless_told():
    class Tiny(StrictModel):
        """Tiny section of a test.

        Later paragraphs are not part of the description.
        """

        size: int = 1

    class GRPOLike(StrictModel):
        """GRPO settings."""

    class Holder(StrictModel):
        tiny: Tiny = section_field(Tiny)
        grpo: GRPOLike = section_field(GRPOLike)
        told: Tiny = section_field(Tiny, "A description of its own")

    fields = Holder.model_fields
    assert fields["tiny"].description == "tiny section of a test"
    assert fields["grpo"].description == "GRPO settings"
    assert fields["told"].description == "A description of its own"
    assert Holder().tiny == Tiny() and Holder().tiny is not Holder().tiny
