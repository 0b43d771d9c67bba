"""ntm_jax: the Neural Turing Machine (Graves, Wayne & Danihelka 2014) in JAX and Flax.

Public API:
  NTMCell, NTMState                   the Flax recurrent cell and its carry;
  HeadLayout, head_bias_init          the fused head layer's layout, a bias initializer;
  addressing: content_weights, interpolate, shift, sharpen, address (Eq. 5-9);
  memory: read, write, write_heads (Eq. 2-4).
"""

from ntm_jax.addressing import address
from ntm_jax.addressing import content_weights
from ntm_jax.addressing import interpolate
from ntm_jax.addressing import sharpen
from ntm_jax.addressing import shift
from ntm_jax.cell import NTMCell
from ntm_jax.cell import NTMState
from ntm_jax.heads import HeadLayout
from ntm_jax.heads import head_bias_init
from ntm_jax.memory import read
from ntm_jax.memory import write
from ntm_jax.memory import write_heads

__version__ = '0.1.0'

__all__ = [
    'HeadLayout',
    'NTMCell',
    'NTMState',
    'address',
    'content_weights',
    'head_bias_init',
    'interpolate',
    'read',
    'sharpen',
    'shift',
    'write',
    'write_heads',
]
