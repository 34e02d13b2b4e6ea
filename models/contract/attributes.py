"""The names of an export's methods and attributes, as nn~, the ONNX graphs, OSC and the card use them.

The exporters define the methods and attributes under these names, the card lists them, the
patches send ``[set NAME ...(`` with them and the engine and the checks set them: one spelling.
"""

from __future__ import annotations

FORWARD = "forward"
ENCODE = "encode"
DECODE = "decode"
METHODS = (FORWARD, ENCODE, DECODE)

TEMPERATURE = "temperature"  # scale of the posterior noise; 0 = deterministic
LATENT_BIAS = "latent_bias"  # per-dimension offset between encode and decode in forward
LATENT_SCALE = "latent_scale"  # per-dimension gain between encode and decode in forward
RESET = "reset"  # true clears the streaming state
ATTRIBUTES = (TEMPERATURE, LATENT_BIAS, LATENT_SCALE, RESET)
PER_DIMENSION_ATTRIBUTES = (LATENT_BIAS, LATENT_SCALE)  # one value per latent dimension

TEMPERATURE_MAX = 10.0  # beyond this the posterior noise drowns the signal
