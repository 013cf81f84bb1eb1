"""Generation for evaluation and GRPO sampling: batched decoding, KV-cache prefill, vLLM, the backend choice.

- `hf`: batched decoding with transformers (static cache or our compact loop).
- `prefill`, `prefix_sharing`: grouped prefill, and one prefill for prompts that share a prefix.
- `vision`: the same for image prompts.
- `vllm`: the vLLM engine path (CUDA only).
- `backends`: picks a backend and returns one `GenerateFn` (stands above the others; none imports it).
"""
