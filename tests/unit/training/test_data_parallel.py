"""Data parallelism: two gloo ranks, each on half of a batch, give the one-process gradient and loss."""

import os
import socket
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cascadelab.ranks import split_batch, torchrun_command
from cascadelab.training.data_parallel import DataParallel, shard_rows


@dataclass
class Rows:
    task: str
    x: torch.Tensor
    y: torch.Tensor
    scale: torch.Tensor  # not per row: kept whole


def make_batch():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=generator)
    y = torch.randint(0, 4, (8, 5), generator=generator)
    y[:3, 2:] = -100  # unequal target counts per half: the weighting must follow tokens, not rows
    return Rows("add", x, y, torch.tensor(2.0))


def model_and_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 20)

    def loss_fn(batch):
        logits = model(batch.x).view(-1, 5, 4)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), batch.y.reshape(-1), ignore_index=-100)
        return loss, {"tokens": float(batch.y.numel()), "target_tokens": float((batch.y != -100).sum())}

    return model, loss_fn


def test_shard_rows_splits_every_per_row_tensor_and_keeps_the_rest():
    batch = make_batch()
    first, second = shard_rows(batch, 0, 2), shard_rows(batch, 1, 2)
    assert torch.equal(torch.cat([first.x, second.x]), batch.x) and first.task == "add"
    assert torch.equal(first.scale, batch.scale) and first.y.shape == (4, 5)
    with pytest.raises(ValueError, match=r"^batch_size: 8 rows do not split evenly over 3 processes \(launch.nproc\)$"):
        shard_rows(batch, 0, 3)


def test_split_batch_and_the_torchrun_command(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert split_batch(16, "train.batch_size") == 8
    with pytest.raises(ValueError, match=r"^train.batch_size: 15 rows do not split evenly over 2 processes"):
        split_batch(15, "train.batch_size")
    command = torchrun_command("stages/coarse_sft.py", 2, [])
    # torch.distributed.run behind a launcher that dies with the stage (cascadelab.ranks's __main__)
    assert command[1:] == ["-m", "cascadelab.ranks", "--standalone", "--nproc_per_node=2", "stages/coarse_sft.py"]


def _rank(index, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), WORLD_SIZE="2")
    torch.set_num_threads(1)
    model, loss_fn = model_and_loss()
    parallel = DataParallel.from_environment(torch.device("cpu"))
    loss, stats = loss_fn(parallel.shard(make_batch()))
    loss.backward()
    weight, summed = parallel.share(stats, torch.device("cpu"))
    global_loss = parallel.reduce_gradients(model, weight, loss)
    queue.put((index, global_loss, summed, [p.grad.clone() for p in model.parameters()]))
    dist.destroy_process_group()


def test_two_ranks_reproduce_the_one_process_gradient_and_loss():
    model, loss_fn = model_and_loss()
    loss, stats = loss_fn(make_batch())
    loss.backward()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_rank, args=(index, port, queue)) for index in range(2)]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for _, global_loss, summed, grads in results:
        assert global_loss == pytest.approx(loss.item(), rel=1e-6)
        assert summed == stats  # token counts of the whole batch
        for grad, expected in zip(grads, (p.grad for p in model.parameters()), strict=True):
            torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(results[0][3], results[1][3], strict=True))  # replicas agree
