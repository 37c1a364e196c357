"""Lean inference runtimes: the architectures the embedded default runs (Whisper's encoder and log-mel, a BERT
sentence encoder, a Llama-family causal LM with a merged LoRA adapter, the DDIM sampler), written in plain numpy /
torch and loading the same Hugging Face-format weights.

Why: importing ``transformers``' modelling code, ``peft`` and ``diffusers`` costs about 3 s on a 2-core CPU, more than
everything `avitalk run` computes on 10 s of speech. Training and any checkpoint these runtimes do not cover still use
the libraries; tests check that both give the same numbers.
"""
