"""Test-session set-up, run before any test touches a JAX device."""

import atexit
import functools
import os
import shutil
import tempfile

import pytest

# Most tests compile the same few small training steps, in this process and in the
# experiment runs they start as subprocesses (which inherit the environment): one
# compilation cache per test process, read back instead of compiling again. Set before
# JAX is imported, so that every JAX of this test run sees it; a value already set wins.
_CACHE = tempfile.mkdtemp(prefix='ntm_jax_test_compilation_cache_')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
# The suite runs on the CPU unless told otherwise (benchmarks.gpu_smoke sets cuda,cpu):
# with the TPU runtime installed for the deviceless compile checks, JAX would otherwise
# open it in every process, and libtpu locks a file that two processes cannot share.
for name, value in (
    ('JAX_PLATFORMS', 'cpu'),
    ('JAX_COMPILATION_CACHE_DIR', _CACHE),
    ('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0'),
    ('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0'),
):
  os.environ.setdefault(name, value)

from ntm_jax.training import backend  # noqa: E402 - after the cache's settings

# The same CPU compiler flags as the experiment runners, so that the tests compile and
# run the code the way users' runs do (and faster).
backend.tune_cpu_compiler()


@functools.cache
def _has_gpu() -> bool:
  import jax

  try:
    return bool(jax.devices('gpu'))
  except RuntimeError:  # no GPU backend in this JAX, or no GPU on this machine
    return False


def pytest_runtest_setup(item):
  # Asked only when a `gpu` test is about to run: it initialises JAX's backends.
  if item.get_closest_marker('gpu') is not None and not _has_gpu():
    pytest.skip('needs a GPU (JAX_PLATFORMS=cuda,cpu and the CUDA build of JAX)')
