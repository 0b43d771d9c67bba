"""A function's gradient with the values it saves for the backward pass packed in one buffer.

When a scanned step is differentiated, JAX stacks every value its backward pass needs
(its residuals) into a buffer of its own: one write per value per time step. An NTM step
saves about a hundred small values, so on a GPU most of its forward kernels are such
writes (docs/BENCHMARKS.md, "Kernels per step"). `pack_residuals(fn)` computes the same
values and the same gradients as `fn`, but saves its per-step residuals as one flat
buffer per dtype, which a scan writes with one kernel. Residuals that depend only on the
arguments named invariant (a step's parameters) stay apart, so that a scan keeps them
outside its loop as it does for `fn`.
"""

from collections.abc import Callable, Sequence
import functools
import math

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp


def _varying_outputs(
    jaxpr: jax_core.ClosedJaxpr, varying_inputs: Sequence[bool]
) -> list[bool]:
  """Which outputs of `jaxpr` depend on the inputs flagged as varying (a forward pass
  over its equations; an equation with any varying input makes all its outputs vary)."""
  varying = {v for v, flag in zip(jaxpr.jaxpr.invars, varying_inputs) if flag}
  depends = lambda v: not isinstance(v, jax_core.Literal) and v in varying
  for eqn in jaxpr.jaxpr.eqns:
    if any(map(depends, eqn.invars)):
      varying.update(eqn.outvars)
  return [depends(v) for v in jaxpr.jaxpr.outvars]


def pack_residuals(fn: Callable, invariant_argnums: Sequence[int] = ()) -> Callable:
  """`fn` with its gradient's per-step residuals saved as one flat buffer per dtype.

  Args:
    fn: a function of arrays (pytrees of arrays) to arrays, differentiable by `jax.vjp`.
    invariant_argnums: the positional arguments that stay the same over the steps of a
      scan (parameters): residuals computed from these alone are saved as they are.

  Returns:
    A function with `fn`'s signature, values and gradients (its backward pass is
    `jax.vjp(fn, ...)`'s own, fed the unpacked residuals).
  """
  invariant_argnums = frozenset(invariant_argnums)

  def layout(*args) -> tuple:
    """(the residuals' treedef, ((shape, dtype, packed?) per residual)) for these
    arguments' shapes: a static argument of the custom VJP, so that each use of the
    function, at whatever shapes, unpacks its own residuals."""
    flat, structure = jax.tree.flatten(args)
    found = {}

    def residual_leaves(*flat):
      leaves, found['treedef'] = jax.tree.flatten(
          jax.vjp(fn, *jax.tree.unflatten(structure, flat))[1]
      )
      return leaves

    jaxpr = jax.make_jaxpr(residual_leaves)(
        *[jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in flat]
    )
    varying_inputs = [
        i not in invariant_argnums
        for i, arg in enumerate(args)
        for _ in jax.tree.leaves(arg)
    ]
    varying = _varying_outputs(jaxpr, varying_inputs)
    return found['treedef'], tuple(
        (tuple(v.aval.shape), v.aval.dtype, flag)
        for v, flag in zip(jaxpr.jaxpr.outvars, varying)
    )

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def packed(residual_layout, *args):
    del residual_layout
    return fn(*args)

  def forward(residual_layout, *args):
    out, vjp_fn = jax.vjp(fn, *args)
    leaves = jax.tree.leaves(vjp_fn)
    _, leaf_layout = residual_layout
    if len(leaves) != len(leaf_layout):
      raise AssertionError(
          'pack_residuals: the function saves other values than when '
          'its layout was traced.'
      )
    groups, kept = {}, []
    for leaf, (_, _, flag) in zip(leaves, leaf_layout):
      if flag:
        groups.setdefault(jnp.dtype(leaf.dtype).name, []).append(jnp.ravel(leaf))
      else:
        kept.append(leaf)
    buffers = {name: jnp.concatenate(parts) for name, parts in groups.items()}
    return out, (buffers, kept)

  def backward(residual_layout, residuals, cotangent):
    # The pullback is a `jax.tree_util.Partial`: its static part is the same function of
    # the residuals whichever trace of `fn` made it.
    treedef, leaf_layout = residual_layout
    buffers, kept = residuals
    offsets = dict.fromkeys(buffers, 0)
    kept = iter(kept)
    leaves = []
    for shape, dtype, flag in leaf_layout:
      if not flag:
        leaves.append(next(kept))
        continue
      name, size = jnp.dtype(dtype).name, math.prod(shape)
      leaves.append(buffers[name][offsets[name] : offsets[name] + size].reshape(shape))
      offsets[name] += size
    return jax.tree.unflatten(treedef, leaves)(cotangent)

  packed.defvjp(forward, backward)

  @functools.wraps(fn)
  def with_layout(*args):
    return packed(layout(*args), *args)

  return with_layout
