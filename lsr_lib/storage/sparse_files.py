"""Sparse vectors on disk: scipy CSR ``.npz`` files, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .atomic import atomic_write


def save_sparse(path: str | Path, m: sp.spmatrix) -> None:
    """Write a CSR matrix (float32) to ``.npz`` atomically."""
    atomic_write(path, lambda tmp: sp.save_npz(tmp, sp.csr_matrix(m, dtype=np.float32)), suffix=".npz")


def load_sparse(path: str | Path) -> sp.csr_matrix:
    """Read a matrix written by :func:`save_sparse` as CSR float32."""
    return sp.csr_matrix(sp.load_npz(str(path)), dtype=np.float32)
