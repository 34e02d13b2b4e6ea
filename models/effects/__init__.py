"""Conditioned effect models: audio -> audio with knobs (amp and pedal captures, compressors).

- ``reference``: effects written here (overdrive, compressor) that render training pairs;
- ``pairs``: generated dry audio, rendered pair sets and their training windows;
- ``conditioning``: knob specs, the FiLM generator and the knob smoother;
- ``tcn``, ``gru``: the two cores; ``model``: :class:`EffectModel` around either;
- ``train``: losses, ESR and the trainer (the profiles, ``family: effect``, are in
  :mod:`tildekit.models.config`);
- ``evaluate``: the evaluation metrics (L1, STFT, loudness, crest factor, RMS, transients).
"""
