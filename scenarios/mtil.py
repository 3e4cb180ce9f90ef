"""MTIL: eleven data sets learned one after another, each task scored over its own classes.

Order I (default): Aircraft, Caltech101, CIFAR100, DTD, EuroSAT, Flowers, Food, MNIST, OxfordPet,
StanfordCars, SUN397; order II (`--set scenario.order=II`): StanfordCars, Food, MNIST, OxfordPet,
Flowers, SUN397, Aircraft, Caltech101, DTD, EuroSAT, CIFAR100. Full training splits
(`scenario.shots=0`) or the few-shot protocol (`scenario.shots=5`: five images per class, a fixed
draw). Class names and templates: ZSCL's (see `coop_names`); splits: CoOp's (see `coop_data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cl_bench import ScenarioContext, ScenarioSpec, hookimpl

from .image_folder import no_root_message

VERSION = "1"


def check(data_root: str | None) -> str | None:
    from . import coop_data
    from .coop_names import MTIL_ORDERS

    if data_root is None:
        return no_root_message("mtil", "its 11 data sets (CoOp layout, CIFAR-100 and MNIST as torchvision keeps them)")
    return coop_data.missing(Path(data_root), list(MTIL_ORDERS["I"]), "mtil")


def check_params(params: Mapping[str, Any]) -> None:
    from cl_bench import UserError

    from .coop_data import check_shots
    from .coop_names import MTIL_ORDERS

    if str(params["order"]).upper() not in MTIL_ORDERS:
        raise UserError(f"scenario.order for mtil must be I or II, not {params['order']!r}")
    check_shots(params["shots"])


def build(params: dict[str, Any], context: ScenarioContext):
    # The plan ran check_data (which refuses no data root) and matched an image backbone (which has a size).
    assert context.data_root is not None and context.image_size is not None
    from . import coop_data
    from .coop_names import MTIL_ORDERS, MTIL_TEMPLATES, mtil_name
    from .domains import data_set_stream
    from .reference_data import imagenet_cc

    order = str(params["order"]).upper()
    shots = params["shots"]

    def name_of(source: coop_data.Source, label: int) -> str:
        return mtil_name(source.layout.key, label, source.raw_names[label], source.folders[label])

    tasks = coop_data.read_tasks(context.data_root, MTIL_ORDERS[order], shots, MTIL_TEMPLATES, name_of)
    reference = imagenet_cc(context.data_root, context.image_size)  # read only when a method asks (zscl)
    metadata = {
        "order": order,
        "shots": shots,
        "sources": {
            "splits": "CoOp split_zhou_*.json (FGVC-Aircraft: images_variant_*.txt); CIFAR-100 and MNIST: torchvision train/test",
            "class_names_and_templates": "ZSCL MTIL (MoE-Adapters4CL mtil/src/datasets), mapped onto CoOp's labels",
        },
    }
    return data_set_stream("mtil", VERSION, "mtil", tasks, {**params, "order": order}, context.image_size, distinct_prompts=False, metadata=metadata, reference=reference)


@hookimpl
def cl_bench_scenarios() -> list[ScenarioSpec]:
    return [
        ScenarioSpec(
            name="mtil",
            factory=build,
            summary="MTIL: 11 data sets (order I, or II via scenario.order), each scored over its own classes; scenario.shots=5 for few-shot",
            protocol="mtil",
            num_tasks=11,
            defaults={"order": "I", "shots": 0},
            version=VERSION,
            check_data=check,
            check_params=check_params,
        )
    ]
