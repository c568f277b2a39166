"""SIGMA's RL glue and self-improvement: GRPO bridge, verifiers, replay, RL/LM mix, evolution, NAS, proof."""
