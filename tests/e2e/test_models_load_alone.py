"""End to end: every family's saved folder loads with the Auto classes from a Python that never imported the project,
and lm-evaluation-harness's command line evaluates the coarse and SIGMA models on a local task."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cascadelab.config import (
    ACOCModelParams,
    CausalLMParams,
    HybridRNNModelParams,
    LegoParams,
    SigmaModelParams,
    TokenizerParams,
)
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.acoc import ACOCForCausalLM
from cascadelab.models.coarse import build_causal_lm
from cascadelab.models.hybrid_rnn.modeling_hybrid_rnn import init_hybrid_rnn
from cascadelab.models.lego import LEGOForCausalLM
from cascadelab.pipeline.sigma_pretrain import build_sigma_lm

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LOAD = textwrap.dedent(
    """
    import sys
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    assert not any(name.startswith("cascadelab") for name in sys.modules)
    for folder in sys.argv[1:]:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer("1+2=", return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
        print(folder.rsplit("/", 1)[-1], type(model).__name__, out.shape[1] > 0)
    """
)
TASK = """\
task: cascadelab_add
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["[EOS]"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One untrained tiny model of every family, saved with save_pretrained as the stages save them."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tokenizer([f"{i}+{i % 7}={i + i % 7}" for i in range(40)], TokenizerParams(kind="char"))
    torch.manual_seed(0)
    models = {
        "coarse": build_causal_lm(
            CausalLMParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).to_config(tokenizer)
        ),
        "sigma": build_sigma_lm(SigmaModelParams(preset="tiny"), tokenizer),
        "acoc": ACOCForCausalLM(ACOCModelParams(hidden_size=16, num_layers=1, num_heads=2).to_config(tokenizer)),
        "lego": LEGOForCausalLM(LegoParams().to_config(tokenizer)),
        "hybrid_rnn": init_hybrid_rnn(HybridRNNModelParams(preset="tiny").to_config(tokenizer), 0),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def clean_python(args, cwd):
    """Run the venv's Python isolated from PYTHONPATH, the working directory and user site: only what is installed."""
    return subprocess.run(
        [str(BIN / "python"), "-I", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def test_every_family_loads_with_the_auto_classes_and_generates(folders, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    names = ("coarse", "sigma", "acoc", "lego", "hybrid_rnn")
    result = clean_python([str(script), *(str(folders / name) for name in names)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == list(names) and all(line[2] == "True" for line in lines)
    assert [line[1] for line in lines][1:] == [
        "SigmaForCausalLM",
        "ACOCForCausalLM",
        "LEGOForCausalLM",
        "HybridRNNForConditionalGeneration",
    ]
    config = json.loads((folders / "sigma" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "cascadelab_auto.SigmaForCausalLM"


@pytest.mark.parametrize("name", ["coarse", "sigma"])
def test_lm_eval_command_line_evaluates_the_model_on_a_local_task(folders, tmp_path, name):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(6)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "cascadelab_add.yaml").write_text(TASK.format(items=items))
    model_args = f"pretrained={folders / name},trust_remote_code=True"
    args = ["--model", "hf", "--model_args", model_args, "--device", "cpu", "--tasks", "cascadelab_add"]
    args += ["--include_path", str(tasks), "--output_path", str(tmp_path / "out"), "--batch_size", "4"]
    result = clean_python(["-m", "lm_eval", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(results_file.read_text())["results"]["cascadelab_add"]
    assert 0.0 <= scores["exact_match,none"] <= 1.0
