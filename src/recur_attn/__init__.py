"""recur-attn: experiments with recurrent networks (LSTM family, attention, Grid LSTM)."""

__version__ = "0.1.0"
