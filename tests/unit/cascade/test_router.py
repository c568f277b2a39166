"""The prompt router: learns a prompt's family from its text, saves and loads, and a single family needs no fit."""

from cascadelab.cascade.router import PromptRouter

PROMPTS = ["12+34=", "5+61=", "7*38=", "22*4=", "Tom has 3 cups and gets 2 more. How many?=", "rev abc="]
TASKS = ["add", "add", "mul", "mul", "word", "reverse"]


def test_router_learns_families_from_the_prompt_text_and_round_trips(tmp_path):
    router = PromptRouter.fit(PROMPTS, TASKS)
    assert router.predict(PROMPTS) == TASKS and router.accuracy(PROMPTS, TASKS) == 100.0
    assert router.predict(["9*9=", "Ann has 5 pens and gives 1 away. How many?="]) == ["mul", "word"]
    router.save(tmp_path)
    loaded = PromptRouter.load(tmp_path)
    assert loaded is not None and loaded.predict(PROMPTS) == TASKS
    assert PromptRouter.load(tmp_path / "none") is None


def test_a_single_family_routes_everything_to_it(tmp_path):
    router = PromptRouter.fit(["hello=", "world="], ["custom", "custom"])
    assert router.weight is None and router.predict(["anything", "else"]) == ["custom", "custom"]
    router.save(tmp_path)
    assert PromptRouter.load(tmp_path).predict(["x"]) == ["custom"]
