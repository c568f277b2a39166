"""What the transformer sections built from config share: size field types, the heads check, HF config names."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import Field

AttentionHeads = Annotated[int, Field(gt=0, description="attention heads")]
MLPSize = Annotated[int, Field(gt=0, description="hidden size of each layer's MLP")]
MaxPositions = Annotated[int, Field(gt=0, description="longest sequence in tokens")]
InitializerRange = Annotated[float, Field(gt=0, description="standard deviation of the normal weight initialisation")]


class TransformerSizes(Protocol):
    """The size fields a transformer section declares under these names (its layer count may be named otherwise)."""

    hidden_size: int
    num_heads: int
    max_position_embeddings: int
    initializer_range: float


def check_heads_divide(sizes: TransformerSizes) -> None:
    """Raise ValueError naming `hidden_size` where `num_heads` does not divide it."""
    if sizes.hidden_size % sizes.num_heads:
        raise ValueError(f"hidden_size: must be divisible by num_heads ({sizes.hidden_size} % {sizes.num_heads})")


def hf_sizes(sizes: TransformerSizes, num_layers: int) -> dict[str, Any]:
    """The `PretrainedConfig` arguments of a transformer's sizes, under the names Hugging Face configs use."""
    return {
        "hidden_size": sizes.hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": sizes.num_heads,
        "max_position_embeddings": sizes.max_position_embeddings,
        "initializer_range": sizes.initializer_range,
    }
