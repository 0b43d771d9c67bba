"""Choosing the JAX backend before anything runs on a device."""

import contextlib
import importlib.util
import os
import sys
import tempfile

import jax
import jaxlib

_PLATFORMS = {'cpu': 'cpu', 'gpu': 'cuda', 'tpu': 'tpu'}
_INSTALL_HINTS = {
    'gpu': (
        "install the CUDA build of JAX: pip install -e '.[gpu]' (jax[cuda13], NVIDIA "
        "driver >= 580; '.[gpu-cuda12]' for older drivers)"
    ),
    'tpu': "install the TPU build of JAX on a TPU VM: pip install -U 'jax[tpu]'",
    'cpu': 'reinstall jax and jaxlib',
}
# The modules that bring each accelerator's backend: installed, it found no device.
_PLUGINS = {
    'gpu': ('jax_plugins.xla_cuda13', 'jax_plugins.xla_cuda12'),
    'tpu': ('libtpu',),
}
_DEVICE_HINTS = {
    'gpu': (
        "JAX's CUDA plugin is installed, so check for an NVIDIA GPU and its driver "
        "(>= 580 for '.[gpu]', >= 525 for '.[gpu-cuda12]')"
    ),
    'tpu': "JAX's TPU runtime is installed, so run on a TPU VM",
}


# XLA's CPU compiler in jaxlib 0.10 hands small multiply-and-reduce fusions to YNNPACK,
# which runs the NTM's (batch, N, M) backward reductions slower than XLA's own loops
# (docs/BENCHMARKS.md). Set only for the jaxlib versions measured: XLA aborts on a flag
# it does not know.
_CPU_XLA_FLAGS = {(0, 10): ('--xla_cpu_experimental_ynn_fusion_type=',)}


class AcceleratorUnavailableError(RuntimeError):
  pass


def tune_cpu_compiler() -> tuple[str, ...]:
  """Adds the CPU compiler flags measured to speed up the NTM to `XLA_FLAGS`.

  Must run before JAX creates its CPU backend (the first computation). Flags the user
  already set in `XLA_FLAGS` are left alone. Returns the flags it added.
  """
  version = tuple(int(part) for part in jaxlib.__version__.split('.')[:2])
  current = os.environ.get('XLA_FLAGS', '')
  added = tuple(
      flag
      for flag in _CPU_XLA_FLAGS.get(version, ())
      if flag.split('=')[0] not in current
  )
  if added:
    os.environ['XLA_FLAGS'] = ' '.join((current,) + added).strip()
  return added


def usable_cores() -> int:
  """The CPU cores this process may run on."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def select_accelerator(
    accelerator: str,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    cpu_devices: int | None = None,
) -> list[jax.Device]:
  """Makes `accelerator` ('cpu', 'gpu' or 'tpu') JAX's only backend; returns its devices.

  Must run before the first JAX computation. On the CPU, `cpu_devices` splits the host
  into that many JAX devices, which run concurrently: for data-parallel training over
  the cores (unless `XLA_FLAGS` already sets a device count). With a
  `coordinator_address` it also joins a multi-host run (`jax.distributed.initialize`,
  which must precede any use of a device), and the devices returned are those of every
  process. Raises `AcceleratorUnavailableError`, with the install command, when the
  backend is not available.
  """
  if accelerator not in _PLATFORMS:
    raise ValueError(
        f'--accelerator must be one of {", ".join(_PLATFORMS)}; got {accelerator!r}.'
    )
  jax.config.update('jax_platforms', _PLATFORMS[accelerator])
  if accelerator == 'cpu':
    tune_cpu_compiler()
    if cpu_devices and 'xla_force_host_platform_device_count' not in os.environ.get(
        'XLA_FLAGS', ''
    ):
      jax.config.update('jax_num_cpu_devices', cpu_devices)
  if coordinator_address is not None:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and --process_id.')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  try:
    with _plugin_output_held() as replay:  # the one line below says what went wrong
      devices = jax.devices()
      replay()
  except Exception:  # noqa: BLE001 - JAX raises RuntimeError or AssertionError here
    installed = any(
        importlib.util.find_spec(name.split('.')[0]) and importlib.util.find_spec(name)
        for name in _PLUGINS.get(accelerator, ())
    )
    hint = (
        _DEVICE_HINTS[accelerator]
        if installed
        else (f'to use one, {_INSTALL_HINTS[accelerator]}')
    )
    raise AcceleratorUnavailableError(
        f'--accelerator={accelerator}: no {accelerator.upper()} backend is available on '
        f'this machine; {hint}; or run with --accelerator=cpu.'
    ) from None
  return devices


@contextlib.contextmanager
def _plugin_output_held():
  """Holds back what starting the backends writes to stderr (a failing plugin logs a
  traceback, libtpu its C++ log) and yields a function that writes it out: called once
  the backend has started, so that only a failure, reported in one line, drops it."""
  held = tempfile.TemporaryFile()
  saved = os.dup(2)
  sys.stderr.flush()
  os.dup2(held.fileno(), 2)
  released = []

  def restore():
    if not released:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      released.append(True)

  def replay():
    restore()
    held.seek(0)
    sys.stderr.write(held.read().decode(errors='replace'))

  try:
    yield replay
  finally:
    restore()
    held.close()
