"""The padding mask as a public value (an option; the default keeps it secret).

Which tokens are padding reveals each example's length. By default the data owner shares the
attention mask like every other input, so lengths stay secret and every use of the mask is a
secret x secret operation (e.g. softmax attention's exp(s) * mask, (B, heads, S, S) products).
PUMA (Dong et al., 2023) treats the mask as public; with ``public_mask=True`` the data owner
accepts that the servers learn the lengths, the mask is folded into the compiled program as a
constant (SPU makes trace-time constants public), and those products become local
public x secret multiplications. One program is compiled per example set (per mask).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def with_public_mask(f: Callable, mask: np.ndarray) -> Callable:
    """``g(params, embeds, mask_onehot, *rest) = f(params, embeds, mask, mask_onehot, *rest)``.

    f: a verbalizer-style function (secfwt_jax.model.verbalizer_fn) taking the mask as its
    third argument. mask (B, S) int: the attention mask, closed over as a numpy constant, so a
    backend that traces ``g`` sees it as a public constant, not as an input to share.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (B, S), got shape {mask.shape}")

    def g(params, embeds, mask_onehot, *rest):
        return f(params, embeds, mask, mask_onehot, *rest)

    return g
