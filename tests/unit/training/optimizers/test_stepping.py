import torch

from cascadelab.training.optimizers.stepping import closure_loss, params_with_grad


def test_closure_loss_runs_the_closure_with_gradients_on():
    assert closure_loss(None) is None
    with torch.no_grad():
        assert closure_loss(torch.is_grad_enabled) is True


def test_params_with_grad_skips_parameters_without_a_gradient_and_keeps_the_order():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, c.grad = torch.ones(2), torch.full((2,), 2.0)
    pairs = list(params_with_grad({"params": [a, b, c]}))
    assert [(p is q, g is q.grad) for (p, g), q in zip(pairs, [a, c], strict=True)] == [(True, True), (True, True)]
