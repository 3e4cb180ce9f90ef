"""Seeds: the run's seed for every library at the start, and a derived seed per part of a run
(an experience, a loader), so that a resumed run repeats an uninterrupted one exactly."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed for one part of a run (an experience, a loader), stable across processes."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
