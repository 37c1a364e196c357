"""Stage 2: speech + instruction text -> expressive FLAME motion (style encoder, talking decoder, text encoder,
diffusion prior, synthesizer, training and measurements)."""
