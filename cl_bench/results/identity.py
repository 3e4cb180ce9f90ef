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


def identity_of_result(data: dict[str, Any]) -> dict[str, Any] | None:
    """The identity a (checked) result's run id hashes: stored in schema 3's `plan`, derived from
    the resolved sections in schemas 4 and 5 (the backbone's weights path gives way to its hash), None
    for schema 2 (its run ids hashed differently)."""
    schema = data.get("schema")
    if schema == "cl_bench.result/3":
        plan = data.get("plan")
        return plan.get("identity") if isinstance(plan, dict) else None
    if schema not in ("cl_bench.result/4", "cl_bench.result/5"):
        return None
    method, scenario, backbone = data["method"], data["scenario"], data["backbone"]
    weights_param = backbone.get("weights_param")
    return {
        "method": {"name": method["name"], "version": method["version"], "params": method["hyperparameters"]},
        "scenario": {"name": scenario["name"], "version": scenario["version"], "params": scenario["params"], **({"data_sha256": scenario["data_sha256"]} if scenario.get("data_sha256") else {})},
        "backbone": {
            "name": backbone["name"],
            "version": backbone["version"],
            "params": {k: v for k, v in backbone["params"].items() if k != weights_param},
            "weights_sha256": backbone["weights_sha256"],
        },
        "seed": data["seed"],
        "precision": data["hardware"]["precision"],
    }
