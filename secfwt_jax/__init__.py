"""secfwt-jax: forward-only prompt tuning of RoBERTa under MPC (SecretFlow SPU), in JAX/Flax.

The plaintext path (model, tuning, tasks) never imports spu; only secfwt_jax.backend's SPU
modules do, and only when an SPU protocol is asked for.
"""

from .config import ModelConfig
from .loading import load_pretrained
from .model import RobertaMLM, embed_fn, init_params, position_ids, verbalizer_fn
from .tasks.encode import load_tokenizer

__all__ = [
    "ModelConfig",
    "RobertaMLM",
    "embed_fn",
    "init_params",
    "load_pretrained",
    "load_tokenizer",
    "position_ids",
    "verbalizer_fn",
]
__version__ = "0.1.0"
