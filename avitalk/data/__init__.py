"""Datasets: SynthTalk (our synthetic corpus: espeak-ng speech, ground-truth FLAME motion, instructions), importers
for MEAD and RAVDESS (with face fits, or audio-only), the manifest format and feature caches."""
