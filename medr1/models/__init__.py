"""Model loading: the one door (`load`) over shared helpers (`base`) and the vision family (`vision`).

- `base`: devices, dtypes, tokenizers, embedded checkpoints, pad tokens, the one `LoraConfig`.
- `vision`: Qwen2-VL-family processors and models, beside their text siblings.
- `load`: `check_model_spec`, `load_model`, `load_policy`: the functions that ask "text or vision?" once.
"""
