"""Stage 04: evaluation.

- `evaluate`: one model on its sets into one directory (`EvalSettings`, `evaluate_model`), resumable.
- `protocol_eval`: loading a protocol's published sets and running one model under a protocol, every seed.
- `run`: the stage: every model of a run under every protocol (`evaluate_params`, `evaluate_cli`).
- `scoring`, `summary`, `stats`: scorers, per-benchmark summaries, intervals and paired tests.
"""
