"""What a compiled step launches: kernels counted in XLA's optimised HLO text.

On a GPU a batch-1 recurrent step is bound by its kernel launches (each dependent launch
costs microseconds, whatever the work), so their number is the figure to watch when no
device is at hand (`benchmarks.accelerator_compile`) and beside the times when one is
(`benchmarks.gpu_smoke`).
"""

import collections
import re

# HLO instructions that launch no work of their own (calls and loops are looked into).
_FREE_OPCODES = frozenset(
    (
        'parameter',
        'constant',
        'get-tuple-element',
        'tuple',
        'bitcast',
        'after-all',
        'add-dependency',
        'opt-barrier',
        'partition-id',
        'replica-id',
        'domain',
        'get-dimension-size',
    )
)
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*?) ([a-z][a-z0-9\-]*)\((.*)$'
)
_COMPUTATION = re.compile(r'^(ENTRY\s+)?%?([\w.\-]+) .*\{\s*$')


def parse_hlo(text: str) -> tuple[dict[str, list[tuple[str, str]]], str]:
  """Optimised HLO text -> ({computation: [(opcode, rest of line)]}, entry name)."""
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    if current is None:
      match = _COMPUTATION.match(line)
      if match and not line.startswith(' '):
        current = match.group(2)
        computations[current] = []
        if match.group(1):
          entry = current
      continue
    if line.startswith('}'):
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if match:
      computations[current].append((match.group(3), match.group(4)))
  return computations, entry


def _called(attributes: str, *names: str) -> list[str]:
  """The computations an instruction calls by the given attributes."""
  found = []
  for name in names:
    for match in re.finditer(
        rf'\b{name}=\{{([^}}]*)\}}|\b{name}=%?([\w.\-]+)', attributes
    ):
      listed = match.group(1)
      found += (
          [c.strip().lstrip('%') for c in listed.split(',')]
          if listed is not None
          else [match.group(2)]
      )
  return found


def count_kernels(hlo_text: str, num_steps: int) -> dict:
  """Kernels the compiled training step launches, per time step, forward and backward.

  A kernel is an instruction of a computation that runs (not one fused into another) that
  launches work: a fusion, a library call (custom-call), a copy and any other unfused
  operation; `custom_calls` counts the library calls among them, `triton` the fusions XLA
  emits as Triton kernels. Calls and command buffers are looked through (their kernels
  still run, recorded in a CUDA graph or not), loop bodies are counted times their trip
  count and loop conditions once more (a GPU computes each test on the device, and without
  a command buffer for the loop also copies it to the host to decide).
  Loops are told apart by JAX's op names: the NTM's forward time scan runs under
  `jvp(...)`, its backward one under `transpose(jvp(...))`; every other loop (random
  number generation on a CPU, say) counts as `other`. Per time step = the kernels those
  loops launch over a whole step / `num_steps`, whatever the unroll.
  """
  computations, entry = parse_hlo(hlo_text)
  totals = collections.Counter()
  command_buffers = set()

  def walk(name: str, times: int, kind: str | None) -> None:
    for opcode, rest in computations.get(name, ()):
      if opcode == 'while':
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        op_name = op_name.group(1) if op_name else ''
        loop_kind = kind or (
            'backward'
            if 'transpose(' in op_name
            else 'forward'
            if 'jvp(' in op_name
            else 'other'
        )
        trips = int(trip.group(1)) if trip else 1
        for body in _called(rest, 'body'):
          walk(body, times * trips, loop_kind)
        for condition in _called(rest, 'condition'):  # evaluated once more than the body
          walk(condition, times * (trips + 1), loop_kind)
      elif opcode in ('call', 'conditional', 'async-start'):
        targets = _called(
            rest,
            'to_apply',
            'calls',
            'branch_computations',
            'true_computation',
            'false_computation',
        )
        command_buffers.update(t for t in targets if 'command_buffer' in t)
        for target in targets:
          walk(target, times, kind)
      elif opcode not in _FREE_OPCODES:
        totals[kind or 'outside loops'] += times
        if opcode == 'custom-call':  # a library call: cuBLAS GEMM, cuDNN, ...
          totals['custom calls'] += times
        elif opcode == 'fusion':
          totals['fusions'] += times
          if '"kind":"__triton' in rest:  # a Triton kernel: GEMM, softmax, ...
            totals['triton'] += times

  walk(entry, 1, None)
  return dict(
      forward_per_step=totals['forward'] / num_steps,
      backward_per_step=totals['backward'] / num_steps,
      other_loops=totals['other'],
      outside_loops=totals['outside loops'],
      fusions=totals['fusions'],
      custom_calls=totals['custom calls'],
      triton=totals['triton'],
      total=sum(totals[k] for k in ('forward', 'backward', 'other', 'outside loops')),
      command_buffers=len(command_buffers),
  )
