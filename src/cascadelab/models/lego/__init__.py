"""LEGO: a layered decoder-only LM with an exit head after each block and confidence routing.

Importing this package registers the model with the transformers Auto classes (``model_type="lego"``).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from cascadelab.models.lego.configuration_lego import LEGOConfig
from cascadelab.models.lego.modeling_lego import (
    LEGOForCausalLM,
    LEGOModel,
    LEGOPreTrainedModel,
    LEGOTransformer,
    build_lego_model,
)

AutoConfig.register("lego", LEGOConfig, exist_ok=True)
AutoModelForCausalLM.register(LEGOConfig, LEGOForCausalLM, exist_ok=True)

__all__ = ["LEGOConfig", "LEGOForCausalLM", "LEGOModel", "LEGOPreTrainedModel", "LEGOTransformer", "build_lego_model"]
