"""CascadeTransformer control flow with a scripted coarse model and refiner (the cascade is what is tested)."""

import logging

import pytest
import torch
from cascade_doubles import ScriptedCascade, ScriptedRefiner

from cascadelab.cascade.cascade import CascadeTransformer
from cascadelab.cascade.limen import CHEAP_FEATURES, Limen, LimenGate
from cascadelab.config import CascadeSettings, LimenSettings

TASKS = ["add", "mul"]


def _limen(model, tokenizer, verifier, threshold):
    # tension = σ(answer_chars − 4.5): 3 chars 0.18, 4 chars 0.38, 5 chars 0.62.
    names = [*CHEAP_FEATURES, *(f"task_{t}" for t in TASKS)]
    weight = torch.tensor([1.0 if n == "answer_chars" else 0.0 for n in names])
    gate = LimenGate(weight, torch.tensor(-4.5), torch.zeros(len(names)), torch.ones(len(names)))
    return Limen(model, tokenizer, verifier, LimenSettings(use_hidden=False, use_task=True), TASKS, gate, threshold)


@pytest.fixture()
def build(tiny_model, tokenizer, verifier):
    def make(script, coarse, threshold=0.1, steps=1, use_coarse=True, route=None):
        refiner = ScriptedRefiner(tiny_model, tokenizer, script, use_coarse)
        settings = CascadeSettings(max_refinement_steps=steps, route_tasks=route)
        cascade = ScriptedCascade(
            tiny_model, refiner, _limen(tiny_model, tokenizer, verifier, threshold), tokenizer, settings
        )
        cascade.coarse_table = coarse
        return cascade

    return make


def test_stops_when_the_answer_no_longer_changes(build):
    cascade = build({"+000": "1,2:+111", "+111": "1,2:+662", "+662": "1,2:+662"}, {"7*38=": "+000"}, steps=5)
    trace = cascade.generate(["7*38="], "always_refine", ["mul"]).traces[0]
    assert [p.answer for p in trace.passes] == ["+111", "+662", "+662"]
    assert trace.stop_reason == "answer unchanged"
    assert trace.final == "1,2:+662" and trace.final_stage == "refined"


def test_stops_when_tension_stops_falling_and_keeps_the_less_tense_pass(build):
    cascade = build({"+000": "1:+11", "+11": "1:+1111"}, {"7*38=": "+000"}, steps=5)
    trace = cascade.generate(["7*38="], "normal", ["mul"]).traces[0]
    assert not trace.coarse_decision.approved
    assert [p.answer for p in trace.passes] == ["+11", "+1111"]
    assert trace.passes[1].tension > trace.passes[0].tension
    assert trace.stop_reason == "tension stopped falling"
    assert trace.refined == "1:+11" and trace.final == "1:+11"
    assert trace.decision == "refined version selected"


def test_stops_when_the_input_repeats(build):
    cascade = build({"": "1:+662"}, {"7*38=": "+000"}, steps=4, use_coarse=False)
    trace = cascade.generate(["7*38="], "always_refine", ["mul"]).traces[0]
    assert len(trace.passes) == 1 and trace.stop_reason == "input repeats an earlier pass"
    assert cascade.refiner.generated == ["7*38=[COARSE][REFINE]"]


def test_stops_at_max_refinement_steps(build):
    cascade = build({"+000": "1:+111", "+111": "1:+222", "+222": "1:+333"}, {"7*38=": "+000"}, steps=2)
    trace = cascade.generate(["7*38="], "always_refine", ["mul"]).traces[0]
    assert [p.answer for p in trace.passes] == ["+111", "+222"]
    assert trace.stop_reason == "max refinement steps"


def test_cache_serves_repeated_coarse_outputs(build):
    cascade = build({"+000": "1:+662", "+662": "1:+662"}, {"7*38=": "+000", "38*7=": "+000"}, steps=1)
    first = cascade.generate(["7*38=", "7*38="], "always_refine", ["mul", "mul"])
    assert [t.passes[0].cached for t in first.traces] == [False, True]
    assert first.traces[1].generated_tokens == first.traces[1].coarse_tokens
    second = cascade.generate(["7*38="], "always_refine", ["mul"])
    assert second.traces[0].passes[0].cached and second.traces[0].passes[0].tokens == 0
    assert len(cascade.refiner.generated) == 1
    cascade.clear_cache()
    cascade.generate(["7*38="], "always_refine", ["mul"])
    assert len(cascade.refiner.generated) == 2


def test_normal_mode_decisions(build):
    coarse = {"12+34=": "+640", "1+1=": "+20", "2+2=": "four", "7*38=": "+000", "8*38=": "+000"}
    script = {"+000": "650,012:+662"}
    cascade = build(script, coarse, threshold=0.3)
    out = cascade.generate(list(coarse), "normal", ["add", "add", "add", "mul", "mul"])
    by_prompt = {t.prompt: t for t in out.traces}
    assert by_prompt["1+1="].decision == "coarse approved" and by_prompt["1+1="].final == "+20"
    assert by_prompt["12+34="].decision == "not routed: alternative: coarse (tension 0.378)"
    assert by_prompt["12+34="].final == "+640" and not by_prompt["12+34="].passes
    assert by_prompt["2+2="].final_stage is None and by_prompt["2+2="].final == ""
    assert by_prompt["2+2="].decision.startswith("not routed: silence: coarse refused (malformed")
    assert by_prompt["7*38="].final == "650,012:+662" and by_prompt["7*38="].routed
    assert out.outputs == [t.final for t in out.traces]


def test_a_family_threshold_overrides_the_global_one(build):
    coarse = {"7*38=": "+000", "12+34=": "+640"}  # both tension 0.378
    cascade = build({"+000": "650,012:+662"}, coarse, threshold=0.3)
    cascade.family_thresholds = {"mul": 0.5}
    out = cascade.generate(list(coarse), "normal", ["mul", "add"])
    assert out.traces[0].decision == "coarse approved" and not out.traces[0].routed
    assert out.traces[1].decision.startswith("not routed")  # add keeps the global 0.3
    assert cascade.threshold_of("mul") == 0.5 and cascade.threshold_of("add") == 0.3
    intentions = cascade.limen.create_intentions(["7*38="], ["+000"], "coarse", ["mul"])
    with pytest.raises(ValueError, match="validate_intentions: 2 thresholds for 1 intentions"):
        cascade.limen.validate_intentions(intentions, [0.1, 0.2])


def test_refused_refinement_falls_back_to_coarse(build):
    cascade = build({"+000": "1,2:junk"}, {"7*38=": "+000"}, threshold=0.1)
    trace = cascade.generate(["7*38="], "normal", ["mul"]).traces[0]
    assert trace.refined_decision.reason == "malformed: no answer in the family's format"
    assert trace.final == "+000" and trace.final_stage == "coarse"
    assert trace.decision == "refined refused: alternative: coarse (tension 0.378)"


def test_coarse_only_and_skip_coarse(build):
    cascade = build({"": "1:+662", "+000": "1:+111"}, {"7*38=": "+000"})
    coarse = cascade.generate(["7*38="], "coarse_only", ["mul"]).traces[0]
    assert coarse.final == "+000" and coarse.coarse_tension is None and not coarse.passes
    skip = cascade.generate(["7*38="], "skip_coarse", ["mul"]).traces[0]
    assert skip.coarse is None and skip.coarse_tokens == 0
    assert skip.passes[0].input == "7*38=[COARSE][REFINE]" and skip.final == "1:+662"
    with pytest.raises(ValueError, match="mode: must be one of"):
        cascade.generate(["7*38="], "fast")


def test_debug_log_lines(build, caplog):
    cascade = build({"+000": "650,012:+662"}, {"7*38=": "+000"})
    with caplog.at_level(logging.DEBUG, logger="cascadelab.cascade"):
        cascade.generate(["7*38="], "normal", ["mul"])
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == '[COARSE] Generated: "+000"'
    assert lines[1].startswith("[LIMEN] Coarse intention: REFUSED (tension 0.378 > 0.100)")
    assert "[REFINER] Input: 7*38=[COARSE]+000[REFINE] → Processing..." in lines
    assert '[REFINER] Generated: "650,012:+662"' in lines
    assert "[LIMEN] Refined intention: APPROVED (tension=0.38)" in lines
    assert lines[-1] == '[CASCADE] Final output: "650,012:+662" (refined version selected)'


def test_coarse_model_required_without_lora(tiny_model, tokenizer, verifier):
    refiner = ScriptedRefiner(tiny_model, tokenizer, {})
    with pytest.raises(ValueError, match="cascade: coarse_model may be None only with a LoRA refiner"):
        CascadeTransformer(None, refiner, _limen(tiny_model, tokenizer, verifier, 0.5), tokenizer, CascadeSettings())


def test_always_refine_and_skip_coarse_leave_families_without_a_refiner_to_the_coarse_model(build, tiny_model):
    cascade = build({"+000": "650,012:+662", "": "1:+662"}, {"7*38=": "+000", "12+34=": "+64"})
    cascade.refiner.models = {"mul": tiny_model}  # a per-family refiner for multiplication only
    for mode in ("always_refine", "skip_coarse"):
        run = cascade.generate(["7*38=", "12+34="], mode, ["mul", "add"])
        refined, kept = run.traces
        assert refined.final_stage == "refined" and refined.passes
        assert kept.final == "+64" and kept.final_stage == "coarse" and not kept.passes
        assert kept.decision == f"{mode}: no refiner for this family"
    assert cascade.refiner.generated == ["7*38=[COARSE]+000[REFINE]", "7*38=[COARSE][REFINE]"]


@pytest.mark.parametrize("mode", ["normal", "always_refine", "skip_coarse", "coarse_only"])
def test_scrambled_task_labels_leave_every_output_unchanged(build, mode):
    coarse = {"12+34=": "+640", "1+1=": "+20", "2+2=": "four", "7*38=": "+000", "8*38=": "+403"}
    cascade = build({"+000": "650,012:+662", "+403": "1:+000", "": "1:+20"}, coarse, threshold=0.3)
    prompts = list(coarse)
    runs = [
        cascade.generate(prompts, mode, tasks)
        for tasks in (["add", "add", "add", "mul", "mul"], ["mul", "word", "mul", "add", "expr"], None)
    ]
    for run in runs[1:]:
        assert run.outputs == runs[0].outputs
        assert [t.decision for t in run.traces] == [t.decision for t in runs[0].traces]
        assert [t.routed for t in run.traces] == [t.routed for t in runs[0].traces]
    assert [t.family for t in runs[0].traces] == ["add", "add", "add", "mul", "mul"]  # the router's, from the text
