"""The contract: what every part of tildekit agrees on, in one torch-free place.

The model card and its validation (``card``, ``card_check``), the names of methods and
attributes (``attributes``) and the rule for names that become file names, Pd/Max words and OSC
address parts (``names``), the hosts' rules (``hosts``: buffer sizes, defaults; ``nn_host``: nn~'s
delay arithmetic), the OSC address space (``oscmap``), one atomic writer (``atomic``) and one
audio-reading policy (``audio``).

It imports the standard library, numpy, yaml and :mod:`tildekit.errors` only (tests/test_layering.py
checks it): the runtime install and every layer above import it without torch.
"""
