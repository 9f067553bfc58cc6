"""A workaround for the runtime under torch, applied once when stnkit is imported.

Intel MKL's vector math library (VML), which torch's CPU wheels call for ``sqrt``,
``exp`` and other unary functions (a large tensor split between the intra-op threads),
initialises itself on its first call. When that first call is made by
two intra-op threads at once, while another process loads the CPU, one of them can
compute it with a low-accuracy kernel: with torch 2.13.0 (MKL 2024.2) on 2 threads, the
first ``Tensor.sqrt`` of 2,592 floats was off by up to 3.1e-4 relative error in 5 of 60
fresh processes (``docs/experiments/runtime/vml_first_call.py``). That sqrt is the first
Adam step's: the likeliest cause of a ``--deterministic`` run that now and then ended with
other weights (``docs/guarantees.md``). One call from a single thread initialises VML for
every function and thread (0 of 60 with it).
"""

from __future__ import annotations

import torch


def warm_vector_math() -> None:
    """Make the first VML call from this thread alone (a 1-element ``exp``, which torch runs inline)."""
    torch.exp(torch.zeros(1))
