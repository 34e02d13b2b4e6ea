"""Facts about the nn~ host that more than one consumer needs (docs/contracts.md §1).

Pure data and arithmetic, no torch: the patch generator and `tildekit bench` both read it.
"""

from __future__ import annotations

PD_BLOCK = 64  # Pd's default DSP block
NN_FIXED_BUFFER = 4096  # nn~'s internal buffer for 1-in/1-out methods unless [bufsize B( is sent

# nn~ 1.6 never tells a model the host's rate on load, and on [reload( passes an uninitialised
# value to set_sample_rate (observed: -2147483648): the generated patches send the real rate
# through this attribute instead, on load and whenever DSP starts.
HOST_RATE_ATTRIBUTE = "host_sample_rate"
# set_sample_rate values outside this range are taken for uninitialised memory and ignored.
PLAUSIBLE_RATES = (8000, 768000)


def nn_host_delay(buffer: int, one_in_one_out: bool, bufsize_sent: bool = False) -> int:
    """Samples nn~'s worker thread adds around one object at ``buffer`` (Pd, block 64).

    Multi-channel methods (encode, decode) and 1-in/1-out methods after ``[bufsize B(`` delay by
    ``2B - 64``; a 1-in/1-out method left at nn~'s internal 4096 delays by ``4032 + B``.
    """
    if one_in_one_out and not bufsize_sent:
        return NN_FIXED_BUFFER - PD_BLOCK + buffer
    return 2 * buffer - PD_BLOCK
