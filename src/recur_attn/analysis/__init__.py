"""Seeing inside trained recurrent networks: gate activations, cell-state
trajectories and gradient flow through time (figures in :mod:`.figures`)."""

from recur_attn.analysis.gradient_flow import (
    GradientFlow,
    StateProbe,
    find_recurrent,
    find_recurrents,
    gradient_flow,
    probe_states,
)

__all__ = ["GradientFlow", "StateProbe", "find_recurrent", "find_recurrents", "gradient_flow", "probe_states"]
