"""coarse_sft's test generation budget: one number for every prompt (no task label), raised for user rows."""

from tests.unit.data.tiny_records import records_tokenizer

from cascadelab.config import CoarseSFTParams
from cascadelab.pipeline.coarse_sft import generation_budget

META = {"user": {"weight": 0.25, "only": False, "generation_margin": 0.5}}


def test_without_user_rows_every_prompt_gets_eval_max_new_tokens() -> None:
    params = CoarseSFTParams()
    train = [{"task": "add", "prompt": "1+2=", "response": "3"}]
    assert generation_budget(params, records_tokenizer(), train, {}) == (
        params.eval.max_new_tokens,
        "coarse_sft.eval.max_new_tokens",
    )


def test_long_user_responses_raise_the_one_budget_and_the_error_names_the_margin() -> None:
    params = CoarseSFTParams.model_validate({"eval": {"max_new_tokens": 4}})
    train = [{"task": "user", "prompt": "q", "response": "dcbadcba"}, {"task": "add", "prompt": "a", "response": "b"}]
    budget, what = generation_budget(params, records_tokenizer(), train, META)
    assert budget == 14  # (8 + EOS) x 1.5, rounded up
    assert what == (
        "the user generation budget (longest user train response x (1 + prepare.user_dataset.generation_margin))"
    )
    short = [{"task": "user", "prompt": "q", "response": "a"}]  # (1 + EOS) x 1.5 = 3 tokens
    assert generation_budget(params, records_tokenizer(), short, META) == (4, "coarse_sft.eval.max_new_tokens")
