"""Independent NumPy references: each equation written as the obvious loop, in float64."""

import numpy as np


def content_weights(memory, key, beta):
  n = memory.shape[0]
  sims = np.zeros(n)
  for i in range(n):
    denominator = np.linalg.norm(key) * np.linalg.norm(memory[i])
    sims[i] = np.dot(key, memory[i]) / denominator if denominator > 0 else 0.0
  e = np.exp(beta * sims - np.max(beta * sims))
  return e / e.sum()


def interpolate(w_content, w_prev, gate):
  return np.array([gate * c + (1 - gate) * p for c, p in zip(w_content, w_prev)])


def shift(w, s):
  n, radius = len(w), len(s) // 2
  out = np.zeros(n)
  for i in range(n):
    for j in range(n):
      offset = (i - j) % n  # Eq. 8: s(i - j), indices mod N
      for k in range(-radius, radius + 1):
        if k % n == offset:
          out[i] += w[j] * s[k + radius]
  return out


def sharpen(w, gamma):
  powered = np.array([x**gamma for x in w])
  return powered / powered.sum()


def read(memory, w):
  return sum(w[i] * memory[i] for i in range(len(w)))


def write(memory, w, erase, add):
  out = np.array(memory, dtype=np.float64)
  for i in range(memory.shape[0]):
    for j in range(memory.shape[1]):
      out[i, j] = memory[i, j] * (1 - w[i] * erase[j]) + w[i] * add[j]
  return out
