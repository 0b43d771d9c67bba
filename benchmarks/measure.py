"""Timing one jitted training step: compile time, median step time, peak memory.

Shared by the benchmarks; it defines no flags, so that any script can import it.
"""

import time

import jax
import numpy as np

from ntm_jax.tasks import Task
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import factory
from ntm_jax.training import optim
from ntm_jax.training import population
from ntm_jax.training import train_state


def measure(
    config: ExperimentConfig,
    task: Task,
    repeats: int,
    model=None,
    keep_hlo: bool = False,
    forward: bool = False,
    steps_per_call: int = 0,
) -> dict:
  """Compile time, median step time and peak memory of the training step.

  With `repeats=0` it returns the compiled step and its first state instead of times
  (`compiled`, `state`, `compile_seconds`), for callers that interleave variants.
  `model` replaces the one the config builds (a variant of it, e.g. another scan
  `unroll`); with `keep_hlo` the result also holds the compiled step's optimised HLO text.
  `peak_bytes` is the compiler's figure for this step; `device_peak_bytes`, where the
  device reports it (GPU, TPU), the process's allocator peak so far. With `forward` (a
  single run's step), `forward_seconds` times the forward pass alone. With
  `steps_per_call` (and `repeats=0`) the compiled function runs that many steps per call,
  (state, steps) -> (state, metrics), as the runner's loop calls it on several CPU
  devices (`train_state.repeated_steps`).
  """
  if steps_per_call and repeats:
    raise ValueError('steps_per_call needs repeats=0: the caller times the calls.')
  model = model or factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  options = dict(
      micro_batch_size=config.micro_batch_size,
      entropy_penalty=config.entropy_penalty,
      skip_grad_norm=config.skip_grad_norm,
      ema_decay=config.ema_decay,
  )
  if config.seeds:  # a population's step: every member at once
    mesh = (
        population.make_population_mesh(len(config.seeds))
        if config.data_parallel
        else None
    )
    state = population.Population.start(
        train_state.create_population_state(
            model, optimizer, task, config.seeds, ema=bool(config.ema_decay)
        )
    )
    state = population.shard_members(state, mesh)
    step = population.make_population_step(
        model,
        optimizer,
        task,
        config.batch_size,
        config.seeds,
        mesh,
        members_at_once=config.members_at_once,
        **options,
    )
  else:
    keys = train_state.Keys(0)
    state = train_state.create_train_state(
        model, optimizer, task, keys, ema=bool(config.ema_decay)
    )
    mesh = train_state.make_mesh(config.batch_size) if config.data_parallel else None
    if mesh is not None:
      state = train_state.replicate(state, mesh)
    step = train_state.make_train_step(
        model, optimizer, task, config.batch_size, keys.data, mesh, **options
    )
  jax.block_until_ready(state)
  start = time.perf_counter()
  if steps_per_call:
    compiled = (
        train_state.repeated_steps(step, steps_per_call)
        .lower(state, steps_per_call)
        .compile()
    )
  else:
    compiled = step.lower(state).compile()
  compile_seconds = time.perf_counter() - start
  if repeats == 0:  # the caller times it: compiled step, state, compile time
    return dict(
        compiled=compiled,
        state=state,
        compile_seconds=compile_seconds,
        steps_per_call=steps_per_call,
    )
  memory = compiled.memory_analysis()
  peak_bytes = None
  if memory is not None:
    peak_bytes = (
        memory.temp_size_in_bytes
        + memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
    )
  for _ in range(5):  # warm-up: the first steps after compiling (or a matmul) run slower
    state, _ = compiled(state)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = compiled(state)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  result = dict(
      compile_seconds=compile_seconds,
      step_seconds=float(np.median(times)),
      peak_bytes=peak_bytes,
      device_peak_bytes=device_peak_bytes(),
      forward_seconds=forward_seconds(
          model, state.params, task, config.batch_size, repeats
      )
      if forward and not config.seeds
      else None,
  )
  if keep_hlo:
    result['hlo'] = compiled.as_text()
  return result


def forward_seconds(model, params, task: Task, batch_size: int, repeats: int) -> float:
  """Median time of the model's forward pass alone on a training batch, without the
  gradient: the step's time less this is its backward pass and update."""
  inputs = task.sample_train(jax.random.key(1), batch_size).inputs
  forward = jax.jit(lambda p, x: model.apply(p, x, rngs={'memory': jax.random.key(2)}))
  compiled = forward.lower(params, inputs).compile()
  return median_seconds(lambda: compiled(params, inputs), repeats, warm_up=1)


def median_seconds(call, repeats: int, warm_up: int = 5) -> float:
  """Median wall time of `call()` until its results are ready, after `warm_up` calls."""
  for _ in range(warm_up):
    jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def device_peak_bytes() -> int | None:
  """The default device's allocator peak so far, where the backend reports one."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')
