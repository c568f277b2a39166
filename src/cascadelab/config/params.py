"""The whole params.yaml (`Params`), its loader and the one-line error every validation problem becomes.

Loading stops at the first problem with one line naming the key path, e.g.
``params.yaml: coarse_sft.train.learning_rate: must be greater than 0 (got -1.0)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from cascadelab.config.acoc import ACOCParams
from cascadelab.config.base import TASK_FAMILIES, ParamsError, StrictModel, field_description, section_field
from cascadelab.config.cascade import CascadeEvalSettings, LimenSettings, PairsSettings, RefinerSettings
from cascadelab.config.claims import ClaimsParams
from cascadelab.config.coarse_sft import CoarseSFTParams
from cascadelab.config.hybrid_rnn import HybridRNNParams
from cascadelab.config.launch import LaunchParams
from cascadelab.config.lego import LegoParams
from cascadelab.config.prepare import PrepareParams
from cascadelab.config.report import ReportParams
from cascadelab.config.sigma_pretrain import SigmaPretrainParams
from cascadelab.config.sigma_rl import SigmaRLParams
from cascadelab.config.tracking import TrackingParams
from cascadelab.config.yaml_source import load_yaml


class Params(StrictModel):
    """The whole params.yaml: the data and training seeds plus one section per stage."""

    seed: int = Field(
        1234, ge=0, description="global seed: prepare's corpus split, and the other stages' draws unless training_seed"
    )
    training_seed: int | None = Field(
        None,
        ge=0,
        description="seed of the stages after prepare (initialisation, batch order, sampling); null: seed. "
        "Another value retrains on the same corpus and test items (`make claims` runs 1 and 2)",
    )
    tracking: TrackingParams = section_field(TrackingParams)
    launch: LaunchParams = section_field(LaunchParams)
    prepare: PrepareParams = section_field(PrepareParams)
    coarse_sft: CoarseSFTParams = section_field(CoarseSFTParams)
    sigma_pretrain: SigmaPretrainParams = section_field(
        SigmaPretrainParams, "SigmaLLM and a same-size Llama baseline pre-trained on the same batches, both evaluated"
    )
    sigma_rl: SigmaRLParams = section_field(SigmaRLParams)
    lego: LegoParams = section_field(LegoParams)
    hybrid_rnn: HybridRNNParams = section_field(
        HybridRNNParams,
        "the hybrid RNN-Transformer (issue 6): biLSTM encoder, Transformer decoder, prompt→response",
    )
    acoc: ACOCParams = section_field(
        ACOCParams, "an ACOC run (issue 5): tasks and their first cycle, the cycle loop, every component"
    )
    cascade_pairs: PairsSettings = section_field(PairsSettings)
    limen: LimenSettings = section_field(LimenSettings)
    refiner: RefinerSettings = section_field(RefinerSettings)
    cascade_eval: CascadeEvalSettings = section_field(CascadeEvalSettings)
    report: ReportParams = section_field(ReportParams)
    claims: ClaimsParams = section_field(ClaimsParams)

    @property
    def train_seed(self) -> int:
        """The seed the stages after prepare draw from: `training_seed`, or `seed` where it is null."""
        return self.seed if self.training_seed is None else self.training_seed

    @model_validator(mode="after")
    def _cascade_families(self) -> Params:
        for key, names in (
            ("cascade_pairs.tasks", self.cascade_pairs.tasks or []),
            ("refiner.mix", list(self.refiner.mix)),
            ("cascade_eval.cascade.route_tasks", self.cascade_eval.cascade.route_tasks or []),
        ):
            for name in names:
                if name not in TASK_FAMILIES:
                    raise ValueError(f"{key}.{name}: unknown task family (known: {', '.join(TASK_FAMILIES)})")
        return self


# pydantic's strict type errors, as the YAML type a value must have
_EXPECTED_TYPES = {
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def describe_value(value: Any) -> str:
    """How a YAML or JSON value reads in an error: `null`, `the boolean true`, `the string 'yes'`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    return "a mapping" if isinstance(value, dict) else f"a {type(value).__name__}"


def format_error(error: ValidationError) -> str:
    """The first validation error as `<key path>: <message>`; a bad value's line ends in its field's description."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
        inner_path, sep, rest = message.partition(": ")
        if sep and " " not in inner_path:
            path = f"{path}.{inner_path}" if path else inner_path
            message = rest
    else:
        if kind in _EXPECTED_TYPES:
            message = f"must be {_EXPECTED_TYPES[kind]} (got {describe_value(first.get('input'))})"
        else:
            message = f"{message.replace('Input should be', 'must be')} (got {first.get('input')!r})"
        description = field_description(Params, first["loc"])
        if description:
            message = f"{message} — {description}"
    return f"{path}: {message}" if path else message


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line naming the first bad key path."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{source}: {format_error(error)}") from None


def read_sections(path: Path) -> dict[str, Any]:
    """The mapping of params sections a YAML file holds; ParamsError naming the file when it is not one."""
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), path) or {}
    except ValueError as error:
        raise ParamsError(str(error)) from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    return parse_params(read_sections(path), source=str(path))
