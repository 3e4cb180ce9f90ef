"""X-TAIL: the ten MTIL data sets without CIFAR-100, 16 training images per class, and every test
image scored over the union of all ten data sets' classes with no task id.

Task order: Aircraft, Caltech101, DTD, EuroSAT, Flowers, Food, MNIST, OxfordPet, StanfordCars,
SUN397 (MoRAM's XTAIL default). Class names and one template per data set follow MoRAM's XTAIL
code (see `coop_names`); names shared by several data sets are made unique as `domains` explains.
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
    from .coop_names import XTAIL_ORDER

    if data_root is None:
        return no_root_message("xtail", "its 10 data sets (CoOp layout, MNIST as torchvision keeps it)")
    return coop_data.missing(Path(data_root), list(XTAIL_ORDER), "xtail")


def check_params(params: Mapping[str, Any]) -> None:
    from .coop_data import check_shots

    check_shots(params["shots"])


def build(params: dict[str, Any], context: ScenarioContext):
    # The plan ran check_data (which refuses no data root) and matched an image backbone (which has a size).
    assert context.data_root is not None and context.image_size is not None
    from . import coop_data
    from .coop_names import XTAIL_ORDER, XTAIL_TEMPLATES, xtail_name
    from .domains import data_set_stream
    from .reference_data import imagenet_cc

    shots = params["shots"]

    def name_of(source: coop_data.Source, label: int) -> str:
        return xtail_name(source.layout.key, source.raw_names[label])

    tasks = coop_data.read_tasks(context.data_root, XTAIL_ORDER, shots, XTAIL_TEMPLATES, name_of)
    reference = imagenet_cc(context.data_root, context.image_size)  # read only when a method asks (zscl)
    metadata = {
        "shots": shots,
        "sources": {
            "splits": "CoOp split_zhou_*.json (FGVC-Aircraft: images_variant_*.txt); MNIST: torchvision train/test",
            "class_names_and_templates": "MoRAM XTAIL/scenario_datasets (Artificer-AI-Lab/MoRAM)",
            "duplicate_names": "bracketed data set title in class_names; reference prompts kept unless two are identical",
        },
    }
    return data_set_stream("xtail", VERSION, "x-tail", tasks, params, context.image_size, distinct_prompts=True, metadata=metadata, reference=reference)


@hookimpl
def cl_bench_scenarios() -> list[ScenarioSpec]:
    return [
        ScenarioSpec(
            name="xtail",
            factory=build,
            summary="X-TAIL: 10 MTIL data sets (no CIFAR-100), 16 shots per class, scored over the union of all classes with no task id",
            protocol="x-tail",
            num_tasks=10,
            defaults={"shots": 16},
            version=VERSION,
            check_data=check,
            check_params=check_params,
        )
    ]
