"""Test-session set-up, run before any test touches a JAX device."""

import functools

import pytest

from ntm_jax.training import backend

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
