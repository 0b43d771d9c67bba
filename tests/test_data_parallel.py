"""Data-parallel and micro-batched training (4 simulated CPU devices) equal one device."""

import os
import subprocess
import sys

import pytest

# Slow: a fresh process with four CPU devices.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _on_four_devices(check: str, *args: str) -> None:
  """Runs `tests.four_devices`' check in a process with four CPU devices."""
  env = dict(
      os.environ,
      PYTHONPATH=ROOT,
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_force_host_platform_device_count=4',
  )
  result = subprocess.run(
      [sys.executable, '-m', 'tests.four_devices', check, *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'{check}: OK' in result.stdout


def test_data_parallel_gives_the_single_device_result(tmp_path):
  _on_four_devices('single_run_splits', str(tmp_path))


def test_a_population_split_over_devices_gives_the_single_device_result(tmp_path):
  _on_four_devices('population_splits', str(tmp_path))


def test_several_steps_in_one_call_equal_as_many_calls():
  _on_four_devices('repeated_steps')
