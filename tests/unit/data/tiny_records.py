"""Four prompt/response records over two tasks and their char tokenizer, shared by batch-level tests."""

from transformers import PreTrainedTokenizerBase

from cascadelab.config import TokenizerParams
from cascadelab.data.tokenizer import train_tokenizer

RECORDS = [
    {"task": "add", "prompt": "12+30=", "response": "+24"},
    {"task": "add", "prompt": "1+2=", "response": "+3"},
    {"task": "rev", "prompt": "rev abcd=", "response": "dcba"},
    {"task": "rev", "prompt": "rev xy=", "response": "yx"},
]


def records_tokenizer() -> PreTrainedTokenizerBase:
    """A char tokenizer trained on the records' prompts and responses."""
    return train_tokenizer([r["prompt"] + r["response"] for r in RECORDS], TokenizerParams(kind="char"))
