"""Entry points: ``recur-attn-train`` (``python -m recur_attn.cli.train``), ``recur-attn-eval``."""
