"""Class names and prompt templates of the MTIL and X-TAIL data sets, as their reference code has them.

MTIL follows ZSCL (Zheng et al., ICCV 2023) as MoE-Adapters4CL keeps it (mtil/src/datasets/
collections.py and cifar10.py): torchvision's class names with "_" turned into spaces, hand-written
tables for Caltech101, EuroSAT and Flowers, and several templates per data set (their text
features are averaged). ZSCL reads torchvision's splits; here the same names are attached to the
classes of CoOp's splits: by image folder for Caltech101 and EuroSAT (CoOp drops Caltech's
Faces_easy, so "centered face" never occurs), by label for Flowers, and by undoing CoOp's renaming
for Oxford Pets (torchvision title-cases the breed) and Stanford Cars (CoOp moves the year first).

X-TAIL follows MoRAM's XTAIL code (Artificer-AI-Lab/MoRAM, XTAIL/scenario_datasets, itself
derived from RAIL): the class name is the one in CoOp's split file, kept as it is (underscores
too); EuroSAT names get " satellite location" appended; MNIST names are 'number: "<torchvision
name>"'; one template per data set.
"""

from __future__ import annotations

MTIL_ORDERS = {
    "I": ("aircraft", "caltech101", "cifar100", "dtd", "eurosat", "oxford_flowers", "food101", "mnist", "oxford_pets", "stanford_cars", "sun397"),
    "II": ("stanford_cars", "food101", "mnist", "oxford_pets", "oxford_flowers", "sun397", "aircraft", "caltech101", "dtd", "eurosat", "cifar100"),
}
# X-TAIL: MTIL order I without CIFAR-100 (MoRAM's XTAIL/main.py default sequence).
XTAIL_ORDER = ("aircraft", "caltech101", "dtd", "eurosat", "oxford_flowers", "food101", "mnist", "oxford_pets", "stanford_cars", "sun397")

XTAIL_TEMPLATES = {
    "aircraft": ("a photo of a {}, a type of aircraft.",),
    "caltech101": ("a photo of a {}.",),
    "dtd": ("{} texture.",),
    "eurosat": ("a centered satellite photo of the {}.",),
    "oxford_flowers": ("a photo of a {}, a type of flower.",),
    "food101": ("a photo of a {}, a type of food.",),
    "mnist": ('a photo of the number: "{}".',),
    "oxford_pets": ("a photo of a {}, a type of pet.",),
    "stanford_cars": ("a photo of a {}.",),
    "sun397": ("a photo of a {}.",),
}


def _spaces(name: str) -> str:
    return name.replace("_", " ")


def mtil_name(key: str, label: int, raw: str, folder: str) -> str:
    """ZSCL's name of a class, from what the split gives: its raw name, label and image folder."""
    top = folder.split("/", 1)[0]
    if key == "caltech101":
        return _table(CALTECH101_BY_FOLDER, top, key)
    if key == "eurosat":
        return _table(EUROSAT_BY_FOLDER, top, key)
    if key == "oxford_flowers":
        return _table(FLOWERS_BY_LABEL, label, key)
    if key == "oxford_pets":  # torchvision: each "_"-separated part of the breed title-cased
        return " ".join(part.title() for part in raw.split("_"))
    if key == "stanford_cars":  # CoOp put the year first; torchvision (cars_meta.mat) has it last
        first, _, rest = raw.partition(" ")
        return _spaces(f"{rest} {first}" if rest else first)
    if key == "sun397":  # torchvision: the class path without its letter folder, "church/indoor"
        return _spaces(folder.split("/", 1)[1] if "/" in folder else folder)
    return _spaces(raw)  # aircraft, cifar100, dtd, food101, mnist: torchvision's names


def xtail_name(key: str, raw: str) -> str:
    if key == "eurosat":
        return f"{raw} satellite location"
    if key == "mnist":
        return _spaces(f'number: "{raw}"')
    return raw


def _table(table, key, data_set: str) -> str:
    from cl_bench import UserError

    known = key in table if isinstance(table, dict) else 0 <= key < len(table)
    if not known:
        raise UserError(f"{data_set}: class {key!r} of the split file is not one of the data set's classes; is this CoOp's split?")
    return table[key]


# ZSCL's Caltech101 names by torchvision category folder (sorted; BACKGROUND_Google removed).
# "head of a  crocodile" has two spaces in ZSCL's table too.
CALTECH101_BY_FOLDER = {
    "Faces": "off-center face",
    "Faces_easy": "centered face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
    "accordion": "accordion",
    "airplanes": "airplane",
    "anchor": "anchor",
    "ant": "ant",
    "barrel": "barrel",
    "bass": "bass",
    "beaver": "beaver",
    "binocular": "binocular",
    "bonsai": "bonsai",
    "brain": "brain",
    "brontosaurus": "brontosaurus",
    "buddha": "buddha",
    "butterfly": "butterfly",
    "camera": "camera",
    "cannon": "cannon",
    "car_side": "side of a car",
    "ceiling_fan": "ceiling fan",
    "cellphone": "cellphone",
    "chair": "chair",
    "chandelier": "chandelier",
    "cougar_body": "body of a cougar cat",
    "cougar_face": "face of a cougar cat",
    "crab": "crab",
    "crayfish": "crayfish",
    "crocodile": "crocodile",
    "crocodile_head": "head of a  crocodile",
    "cup": "cup",
    "dalmatian": "dalmatian",
    "dollar_bill": "dollar bill",
    "dolphin": "dolphin",
    "dragonfly": "dragonfly",
    "electric_guitar": "electric guitar",
    "elephant": "elephant",
    "emu": "emu",
    "euphonium": "euphonium",
    "ewer": "ewer",
    "ferry": "ferry",
    "flamingo": "flamingo",
    "flamingo_head": "head of a flamingo",
    "garfield": "garfield",
    "gerenuk": "gerenuk",
    "gramophone": "gramophone",
    "grand_piano": "grand piano",
    "hawksbill": "hawksbill",
    "headphone": "headphone",
    "hedgehog": "hedgehog",
    "helicopter": "helicopter",
    "ibis": "ibis",
    "inline_skate": "inline skate",
    "joshua_tree": "joshua tree",
    "kangaroo": "kangaroo",
    "ketch": "ketch",
    "lamp": "lamp",
    "laptop": "laptop",
    "llama": "llama",
    "lobster": "lobster",
    "lotus": "lotus",
    "mandolin": "mandolin",
    "mayfly": "mayfly",
    "menorah": "menorah",
    "metronome": "metronome",
    "minaret": "minaret",
    "nautilus": "nautilus",
    "octopus": "octopus",
    "okapi": "okapi",
    "pagoda": "pagoda",
    "panda": "panda",
    "pigeon": "pigeon",
    "pizza": "pizza",
    "platypus": "platypus",
    "pyramid": "pyramid",
    "revolver": "revolver",
    "rhino": "rhino",
    "rooster": "rooster",
    "saxophone": "saxophone",
    "schooner": "schooner",
    "scissors": "scissors",
    "scorpion": "scorpion",
    "sea_horse": "sea horse",
    "snoopy": "snoopy (cartoon beagle)",
    "soccer_ball": "soccer ball",
    "stapler": "stapler",
    "starfish": "starfish",
    "stegosaurus": "stegosaurus",
    "stop_sign": "stop sign",
    "strawberry": "strawberry",
    "sunflower": "sunflower",
    "tick": "tick",
    "trilobite": "trilobite",
    "umbrella": "umbrella",
    "watch": "watch",
    "water_lilly": "water lilly",
    "wheelchair": "wheelchair",
    "wild_cat": "wild cat",
    "windsor_chair": "windsor chair",
    "wrench": "wrench",
    "yin_yang": "yin and yang symbol",
}

# ZSCL's EuroSAT names by image folder (torchvision's label order).
EUROSAT_BY_FOLDER = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}

# ZSCL's Flowers102 names by label (imagelabels.mat minus one, in CoOp and torchvision alike).
FLOWERS_BY_LABEL = (
    "pink primrose",
    "hard-leaved pocket orchid",
    "canterbury bells",
    "sweet pea",
    "english marigold",
    "tiger lily",
    "moon orchid",
    "bird of paradise",
    "monkshood",
    "globe thistle",
    "snapdragon",
    "colt's foot",
    "king protea",
    "spear thistle",
    "yellow iris",
    "globe-flower",
    "purple coneflower",
    "peruvian lily",
    "balloon flower",
    "giant white arum lily",
    "fire lily",
    "pincushion flower",
    "fritillary",
    "red ginger",
    "grape hyacinth",
    "corn poppy",
    "prince of wales feathers",
    "stemless gentian",
    "artichoke",
    "sweet william",
    "carnation",
    "garden phlox",
    "love in the mist",
    "mexican aster",
    "alpine sea holly",
    "ruby-lipped cattleya",
    "cape flower",
    "great masterwort",
    "siam tulip",
    "lenten rose",
    "barbeton daisy",
    "daffodil",
    "sword lily",
    "poinsettia",
    "bolero deep blue",
    "wallflower",
    "marigold",
    "buttercup",
    "oxeye daisy",
    "common dandelion",
    "petunia",
    "wild pansy",
    "primula",
    "sunflower",
    "pelargonium",
    "bishop of llandaff",
    "gaura",
    "geranium",
    "orange dahlia",
    "pink-yellow dahlia",
    "cautleya spicata",
    "japanese anemone",
    "black-eyed susan",
    "silverbush",
    "californian poppy",
    "osteospermum",
    "spring crocus",
    "bearded iris",
    "windflower",
    "tree poppy",
    "gazania",
    "azalea",
    "water lily",
    "rose",
    "thorn apple",
    "morning glory",
    "passion flower",
    "lotus",
    "toad lily",
    "anthurium",
    "frangipani",
    "clematis",
    "hibiscus",
    "columbine",
    "desert-rose",
    "tree mallow",
    "magnolia",
    "cyclamen",
    "watercress",
    "canna lily",
    "hippeastrum",
    "bee balm",
    "ball moss",
    "foxglove",
    "bougainvillea",
    "camellia",
    "mallow",
    "mexican petunia",
    "bromelia",
    "blanket flower",
    "trumpet creeper",
    "blackberry lily",
)

# ZSCL's templates; CIFAR-100 uses its CIFAR templates.
MTIL_TEMPLATES = {
    "aircraft": (
        "a photo of a {}, a type of aircraft.",
        "a photo of the {}, a type of aircraft.",
    ),
    "caltech101": (
        "a photo of a {}.",
        "a painting of a {}.",
        "a plastic {}.",
        "a sculpture of a {}.",
        "a sketch of a {}.",
        "a tattoo of a {}.",
        "a toy {}.",
        "a rendition of a {}.",
        "a embroidered {}.",
        "a cartoon {}.",
        "a {} in a video game.",
        "a plushie {}.",
        "a origami {}.",
        "art of a {}.",
        "graffiti of a {}.",
        "a drawing of a {}.",
        "a doodle of a {}.",
        "a photo of the {}.",
        "a painting of the {}.",
        "the plastic {}.",
        "a sculpture of the {}.",
        "a sketch of the {}.",
        "a tattoo of the {}.",
        "the toy {}.",
        "a rendition of the {}.",
        "the embroidered {}.",
        "the cartoon {}.",
        "the {} in a video game.",
        "the plushie {}.",
        "the origami {}.",
        "art of the {}.",
        "graffiti of the {}.",
        "a drawing of the {}.",
        "a doodle of the {}.",
    ),
    "cifar100": (
        "a photo of a {}.",
        "a blurry photo of a {}.",
        "a black and white photo of a {}.",
        "a low contrast photo of a {}.",
        "a high contrast photo of a {}.",
        "a bad photo of a {}.",
        "a good photo of a {}.",
        "a photo of a small {}.",
        "a photo of a big {}.",
        "a photo of the {}.",
        "a blurry photo of the {}.",
        "a black and white photo of the {}.",
        "a low contrast photo of the {}.",
        "a high contrast photo of the {}.",
        "a bad photo of the {}.",
        "a good photo of the {}.",
        "a photo of the small {}.",
        "a photo of the big {}.",
    ),
    "dtd": (
        "a photo of a {} texture.",
        "a photo of a {} pattern.",
        "a photo of a {} thing.",
        "a photo of a {} object.",
        "a photo of the {} texture.",
        "a photo of the {} pattern.",
        "a photo of the {} thing.",
        "a photo of the {} object.",
    ),
    "eurosat": (
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ),
    "oxford_flowers": (
        "a photo of a {}, a type of flower.",
    ),
    "food101": (
        "a photo of a {}, a type of food.",
    ),
    "mnist": (
        "a photo of the number: \"{}\".",
    ),
    "oxford_pets": (
        "a photo of a {}, a type of pet.",
    ),
    "stanford_cars": (
        "a photo of a {}, a type of car.",
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ),
    "sun397": (
        "a photo of a {}.",
        "a photo of the {}.",
    ),
}
