"""A run's identity and its run id: the canonical JSON of the values that decide its numbers, hashed."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def run_id_of(identity: dict[str, Any]) -> str:
    """`<scenario>_<method>_<backbone>_seed<N>_<first 8 hex of sha256(canonical identity)>`."""
    digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:8]
    return f"{identity['scenario']['name']}_{identity['method']['name']}_{identity['backbone']['name']}_seed{identity['seed']}_{digest}"

