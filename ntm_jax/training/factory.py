"""Builds the model a config describes: the NTM or the LSTM baseline."""

import flax.linen as nn
import jax.numpy as jnp

from ntm_jax import models
from ntm_jax.cell import NTMCell
from ntm_jax.heads import HeadLayout
from ntm_jax.heads import head_bias_init
from ntm_jax.tasks.base import Task
from ntm_jax.training.config import ExperimentConfig


def build_model(config: ExperimentConfig, task: Task) -> nn.Module:
  """The model of `config` for `task`'s input and output widths."""
  dtype = jnp.bfloat16 if config.dtype == 'bfloat16' else jnp.float32
  if config.model == 'lstm':
    return models.LSTMBaseline(features=task.output_size, dtype=dtype, **config.lstm)
  cell = NTMCell(features=task.output_size, dtype=dtype, **config.ntm)
  if config.write_advance_bias:
    cell = cell.clone(
        head_bias_init=advancing_write_heads(cell.head_layout, config.write_advance_bias)
    )
  return models.NTM(
      cell, remat_chunk=config.remat_chunk, carry_grad_clip=config.carry_grad_clip
  )


def advancing_write_heads(layout: HeadLayout, bias: float):
  """A head bias initializer: write heads start by writing one slot after another.

  Each write head's gate starts at -bias and its +1 shift logit at +bias, so at first it
  keeps its previous focus and moves it on by one slot per step, as a list is written
  (`ExperimentConfig.write_advance_bias`).
  """
  return head_bias_init(layout, write={'gate': -bias, ('shift', 1): bias})
