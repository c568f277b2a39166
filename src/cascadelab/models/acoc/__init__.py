"""ACOC: a transformer LM whose mixture-of-experts feed-forward layers grow between training cycles.

Importing this package registers the model with the transformers Auto classes (`model_type="acoc"`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from cascadelab.models.acoc.configuration_acoc import ACOCConfig
from cascadelab.models.acoc.modeling_acoc import ACOCForCausalLM, ACOCModel, ACOCMoE, ACOCPreTrainedModel

AutoConfig.register("acoc", ACOCConfig, exist_ok=True)
AutoModel.register(ACOCConfig, ACOCModel, exist_ok=True)
AutoModelForCausalLM.register(ACOCConfig, ACOCForCausalLM, exist_ok=True)

__all__ = ["ACOCConfig", "ACOCForCausalLM", "ACOCMoE", "ACOCModel", "ACOCPreTrainedModel"]
