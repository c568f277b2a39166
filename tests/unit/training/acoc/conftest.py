import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_batch


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return make_batch()
