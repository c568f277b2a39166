import math

import pytest
import torch

from cascadelab.cascade.limen import (
    CHEAP_FEATURES,
    Decision,
    Limen,
    LimenGate,
    auroc,
    choose_threshold,
    disjoint_halves,
    expected_calibration_error,
    fit_calibration,
    fit_logistic,
    run_limen,
)
from cascadelab.config import LimenSettings

TASKS = ["add", "mul"]


def _gate(weights: dict[str, float], bias: float) -> LimenGate:
    """A hand-set gate on cheap features + task one-hot (no hidden states): tension = σ(w·x + b)."""
    names = [*CHEAP_FEATURES, *(f"task_{t}" for t in TASKS)]
    weight = torch.tensor([weights.get(n, 0.0) for n in names])
    return LimenGate(weight, torch.tensor(bias), torch.zeros(len(names)), torch.ones(len(names)))


@pytest.fixture()
def limen(tiny_model, tokenizer, verifier):
    settings = LimenSettings(
        use_hidden=False, use_task=True, blocked=["BAD"], max_output_chars=20, silence_text="<silence>"
    )
    # Tension rises with the answer length: σ(answer_chars − 4.5), i.e. 4 chars → 0.38, 5 chars → 0.62.
    gate = _gate({"answer_chars": 1.0}, -4.5)
    return Limen(tiny_model, tokenizer, verifier, settings, TASKS, gate, threshold=0.5)


def test_features_have_named_columns(limen):
    intention = limen.create_intention("12+34=", "+640", "coarse", task="add")
    assert intention.features.shape == (len(limen.feature_names()),)
    names = limen.feature_names()
    assert intention.features[names.index("format_valid")] == 1.0
    assert intention.features[names.index("answer_chars")] == 4.0
    assert intention.features[names.index("task_add")] == 1.0 and intention.features[names.index("task_mul")] == 0.0
    assert intention.features[names.index("mean_logprob")] < 0


def test_approve_and_refuse_by_tension(limen):
    approved = limen.validate_intention(limen.create_intention("12+34=", "+640", "coarse", task="add"))
    assert approved.approved and approved.tension == pytest.approx(1 / (1 + math.exp(0.5)), abs=1e-6)
    assert approved.reason == "approved: tension 0.378 <= 0.500"
    refused = limen.validate_intention(limen.create_intention("99+99=", "+8910", "coarse", task="add"))
    assert refused == Decision(False, pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-6), "tension 0.622 > 0.500")


@pytest.mark.parametrize(
    ("output", "stage", "reason"),
    [
        ("", "coarse", "empty"),
        ("   ", "coarse", "empty"),
        ("forty", "coarse", "malformed: no answer in the family's format"),
        ("+64BAD", "coarse", "blocked: 'BAD'"),
        ("+6400000000000000000000", "coarse", "malformed: longer than 20 characters"),
        ("12,:+640", "refined", "malformed: steps do not parse"),
        ("12,34:", "refined", "empty"),
    ],
)
def test_rule_layer_refuses_with_full_tension(limen, output, stage, reason):
    decision = limen.validate_intention(limen.create_intention("12+34=", output, stage, task="add"))
    assert decision == Decision(False, 1.0, reason)


def test_refined_output_is_judged_by_its_final_answer(limen):
    steps = limen.create_intention("7*38=", "650,012:+662", "refined", task="mul")
    answer = limen.create_intention("7*38=", "+662", "coarse", task="mul")
    assert torch.equal(limen.tensions([steps]), limen.tensions([answer]))
    assert limen.validate_intention(steps).approved  # refined_threshold defaults to 1.0
    assert not limen.validate_intentions([steps], refined_threshold=0.0)[0].approved  # the cascade's override
    coarse_alone = limen.validate_intention(answer).approved
    assert limen.validate_intentions([answer], refined_threshold=0.0)[0].approved == coarse_alone  # coarse: unmoved


def test_fallback_to_the_least_tense_alternative(limen):
    refined = limen.create_intention("12+34=", "1,2:junk", "refined", task="add")
    decision = limen.validate_intention(refined)
    assert not decision.approved and decision.reason == "malformed: no answer in the family's format"
    short = limen.create_intention("12+34=", "+640", "coarse", task="add")
    long = limen.create_intention("12+34=", "+6400", "coarse", task="add")
    fallback = limen.get_alternative_or_silence(refined, [long, short], decision)
    assert fallback.output == "+640" and fallback.stage == "coarse"
    assert fallback.decision.approved and fallback.decision.reason == "alternative: coarse (tension 0.378)"


def test_silence_when_no_alternative_is_acceptable(limen):
    refined = limen.create_intention("12+34=", "", "refined", task="add")
    broken = limen.create_intention("12+34=", "forty", "coarse", task="add")
    fallback = limen.get_alternative_or_silence(refined, [broken])
    assert fallback.output == "<silence>" and fallback.stage is None
    assert fallback.decision == Decision(False, 1.0, "silence: refined refused (empty), no acceptable alternative")
    limen.settings.silence_threshold = 0.3  # the only well-formed alternative (tension 0.38) is now too tense
    ok = limen.create_intention("12+34=", "+640", "coarse", task="add")
    assert limen.get_alternative_or_silence(refined, [ok]).stage is None


def test_threshold_override_and_unknown_stage(limen):
    intention = limen.create_intention("12+34=", "+640", "coarse", task="add")
    assert not limen.validate_intentions([intention], threshold=0.1)[0].approved
    with pytest.raises(ValueError, match="stage: must be one of coarse, refined \\(got 'final'\\)"):
        limen.create_intention("1+1=", "+20", "final")


def test_unfitted_limen_is_a_clear_error(tiny_model, tokenizer, verifier):
    limen = Limen(tiny_model, tokenizer, verifier, LimenSettings(use_hidden=False))
    with pytest.raises(ValueError, match="limen: not fitted"):
        limen.validate_intention(limen.create_intention("1+1=", "+20", "coarse"))


def test_save_load_round_trip(limen, tmp_path, tiny_model, tokenizer, verifier, model_factory):
    limen.threshold = 0.42
    limen.save(tmp_path / "limen")
    assert "Limen.load(folder, coarse_model)" in (tmp_path / "limen" / "README.md").read_text()
    loaded = Limen.load(tmp_path / "limen", tiny_model, tokenizer, verifier)
    intentions = [loaded.create_intention("12+34=", o, "coarse", task="add") for o in ("+640", "+6400", "x")]
    assert torch.equal(loaded.tensions(intentions), limen.tensions(intentions))
    assert loaded.threshold == 0.42 and loaded.tasks == TASKS and loaded.settings == limen.settings
    hidden = Limen(tiny_model, tokenizer, verifier, LimenSettings(use_task=True), TASKS, _gate({}, 0.0))
    hidden.gate.weight = torch.zeros(len(hidden.feature_names()))
    hidden.gate.mean = hidden.gate.std = torch.ones(len(hidden.feature_names()))
    hidden.save(tmp_path / "wide")
    with pytest.raises(ValueError, match="gate has 38 weights, base model gives a different width"):
        Limen.load(tmp_path / "wide", model_factory(hidden=16), tokenizer, verifier)


def test_choose_threshold_exact():
    tension = [0.9, 0.8, 0.7, 0.6, 0.2, 0.1]
    correct = [False, True, False, True, True, True]
    # Worst case: every right item sent on breaks. 4 right items; budget 0.25 allows one.
    assert choose_threshold(tension, correct, 0.25) == 0.6  # sends 0.9, 0.8, 0.7 (one right item)
    assert choose_threshold(tension, correct, 0.0) == 0.8
    # With the refiner's outputs: the right item at 0.8 survives refinement, the one at 0.6 does not.
    refined = [True, True, True, False, True, True]
    assert choose_threshold(tension, correct, 0.25, refined) == pytest.approx(0.1 - 1e-6)
    assert choose_threshold(tension, correct, 0.0, refined) == 0.6


def test_auroc_and_ece_exact():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(auroc([0.1, 0.2], [True, True]))
    assert expected_calibration_error([0.1, 0.1, 0.9, 0.9], [False, False, True, True], bins=10) == pytest.approx(0.1)
    assert expected_calibration_error([0.25, 0.75], [True, True], bins=2) == pytest.approx(0.5)


def test_logistic_fit_and_platt_calibration():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=generator)
    y = (x[:, 0] - 0.5 * x[:, 1] > 0).float()
    gate = fit_logistic(x, y, l2=1e-3, max_iter=100)
    assert auroc(gate.logits(x).tolist(), y.bool().tolist()) > 0.99
    # Labels drawn from σ(2·z − 1): Platt scaling recovers a ≈ 2, b ≈ −1.
    z = torch.randn(4000, generator=generator)
    labels = (torch.rand(4000, generator=generator) < torch.sigmoid(2 * z - 1)).float()
    a, b = fit_calibration(z, labels, "platt").tolist()
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(-1.0, abs=0.2)
    a, b = fit_calibration(z, labels, "temperature").tolist()
    assert b == 0.0 and a > 1.0
    assert fit_calibration(z, labels, "none").tolist() == [1.0, 0.0]


def _pairs(n, offset):
    """`n` right "add" answers and `n` wrong "mul" ones: the task feature alone separates them."""
    rows = []
    for i in range(n):
        a, b = offset + i, 2 * i + 1
        rows.append(
            {
                "prompt": f"{a}+{b}=",
                "coarse": "+" + str(a + b)[::-1],
                "task": "add",
                "coarse_correct": True,
                "source": "greedy",
            }
        )
        rows.append({"prompt": f"{a}*{b}=", "coarse": "+0", "task": "mul", "coarse_correct": False, "source": "greedy"})
    return rows


def test_limen_fits_on_pairs(tiny_model, tokenizer, verifier):
    limen = Limen(tiny_model, tokenizer, verifier, LimenSettings(l2=0.1, use_task=True))
    metrics = limen.fit(_pairs(20, 10), _pairs(10, 50))
    assert limen.tasks == ["add", "mul"] and limen.threshold == metrics["threshold"]
    assert metrics["val_auroc"] == 1.0 and metrics["train_auroc"] == 1.0
    assert metrics["val_worst_case_break_rate"] <= 0.02
    assert 0.3 < metrics["val_approval_rate"] < 0.7  # the threshold half of val: about half right, half wrong
    assert 0.0 <= metrics["threshold"] <= 1.0
    assert metrics["features"] == 32 + len(CHEAP_FEATURES) + 2
    with pytest.raises(ValueError, match=r"limen: needs train and val pairs \(got 0 and 20\)"):
        limen.fit([], _pairs(10, 50))


def test_run_limen_saves_the_fitted_gate(tiny_model, tokenizer, verifier, tmp_path):
    settings = LimenSettings(l2=0.1, use_hidden=False)
    outcome = run_limen(tiny_model, tokenizer, verifier, _pairs(20, 10), _pairs(10, 50), settings, tmp_path / "limen")
    loaded = Limen.load(tmp_path / "limen", tiny_model, tokenizer, verifier)
    assert loaded.tasks == outcome.limen.tasks and loaded.threshold == outcome.metrics["threshold"]
    assert torch.equal(loaded.gate.weight, outcome.limen.gate.weight)


def test_calibration_and_threshold_use_disjoint_val_items():
    pairs = [{"prompt": f"{i}+{i}=", "coarse": "+0", "coarse_correct": i % 3 == 0} for i in range(200)]
    pairs += [dict(p, coarse="+1") for p in pairs[:50]]  # a prompt's sampled rows stay with it
    calibration, thresholding = disjoint_halves(pairs)
    assert len(calibration) + len(thresholding) == len(pairs)
    assert not {p["prompt"] for p in calibration} & {p["prompt"] for p in thresholding}
    assert 80 < len({p["prompt"] for p in calibration}) < 120
    with pytest.raises(ValueError, match=r"limen: val needs prompts in both halves \(got [01] and [01]\)"):
        disjoint_halves(pairs[:1])
