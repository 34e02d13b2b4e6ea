"""DDSP timbre transfer: causal features (pitch, loudness), a GRU decoder and a streaming synth."""
