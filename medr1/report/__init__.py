"""Stages 02 and 05: reading run artifacts into tables and figures.

- `results`: results tables (with published reference rows) and paired comparisons.
- `figures`: `make_figure(run_dir, name)`, the registry of report figures.
- `eval_figures`, `training_figures`, `image_figures` (vision runs): the figure builders; `style`: the
  shared style and saving.
- `training_checks`: collapse episodes, the validation table and the kept step (notebook 03).
- `reward_design`: the tables of notebook 02 (what each reward pays for which completion).
"""
