"""`python -m harvest explain`: write a natural-language explanation of each neuron and score it on held-out data.

One job per module: `examples` (what the explainer sees, what is held out), `prompts` (messages and parsing),
`screening` (refusing bad explanations), `backends` (chat models: any OpenAI-compatible server or HF Inference
Providers through huggingface_hub's InferenceClient, or an in-process transformers model), `retry` (backoff),
`metrics` and `embedding` (the scorers' math and sentence model), `scorers`, `workfile` (crash-safe progress),
`run` (the resumable concurrent run) and `cli`.
"""
