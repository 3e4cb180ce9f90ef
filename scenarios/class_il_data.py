"""Fixed class orders, class names and templates of the class-incremental streams.

- CIFAR-100 order: MoE-Adapters4CL's cil/class_orders/cifar100.yaml, the order of the original
  iCaRL code that PODNet, DER and ZSCL use as well (class ids are torchvision's, i.e. the
  fine-label ids of the python archive).
- ImageNet-R order: PyCIL / LAMDA-PILOT's, which PROOF (zhoudw-zdw/PROOF) uses for CLIP:
  numpy.random.seed(1993) then numpy.random.permutation(200) over the ImageFolder class ids
  (sorted WordNet-id folders); PROOF's log prints this order.
- ImageNet-R names and templates: PROOF's utils/labels.json and utils/templates.json ("imagenetr"),
  names indexed by sorted WordNet id, kept as they are (underscores too), as PROOF uses them.
- CIFAR-100 template: "a bad photo of a {}." (MoE-Adapters4CL's class-incremental configs), with
  torchvision's class names as they are (its class-incremental code does not replace underscores).
"""

CIFAR100_ORDER = (
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86, 84, 96, 18, 24,
    32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83, 17, 81, 41, 12, 37, 59, 25, 20,
    80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75, 38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70,
    90, 89, 43, 5, 42, 65, 76, 40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26,
    35, 39,
)

IMAGENET_R_ORDER = (
    168, 136, 51, 9, 183, 101, 171, 99, 42, 159, 191, 70, 16, 188, 27, 10, 175, 26, 68, 187, 98, 6,
    85, 35, 112, 43, 100, 0, 103, 181, 88, 59, 4, 2, 116, 174, 94, 80, 106, 1, 147, 17, 141, 131,
    72, 23, 173, 54, 197, 118, 87, 32, 79, 104, 91, 19, 135, 107, 178, 36, 11, 199, 142, 8, 122, 3,
    28, 57, 153, 172, 190, 56, 49, 44, 97, 62, 151, 169, 194, 55, 192, 12, 189, 78, 66, 180, 15,
    137, 109, 134, 92, 119, 126, 52, 170, 40, 148, 65, 144, 64, 138, 45, 77, 89, 154, 90, 71, 193,
    74, 30, 113, 143, 96, 84, 67, 50, 186, 156, 69, 21, 18, 111, 108, 58, 125, 157, 150, 110, 182,
    129, 166, 83, 81, 60, 13, 165, 14, 176, 63, 117, 5, 22, 145, 121, 38, 41, 82, 127, 114, 20, 31,
    53, 37, 163, 196, 130, 152, 162, 86, 76, 24, 34, 184, 149, 33, 128, 198, 155, 146, 167, 139,
    120, 140, 102, 47, 25, 158, 123, 46, 164, 61, 7, 115, 75, 133, 160, 105, 132, 179, 124, 48, 73,
    93, 39, 95, 195, 29, 177, 185, 161,
)

IMAGENET_R_NAMES = (
    "goldfish", "great_white_shark", "hammerhead", "stingray", "hen", "ostrich", "goldfinch",
    "junco", "bald_eagle", "vulture", "newt", "axolotl", "tree_frog", "iguana", "African_chameleon",
    "cobra", "scorpion", "tarantula", "centipede", "peacock", "lorikeet", "hummingbird", "toucan",
    "duck", "goose", "black_swan", "koala", "jellyfish", "snail", "lobster", "hermit_crab",
    "flamingo", "american_egret", "pelican", "king_penguin", "grey_whale", "killer_whale",
    "sea_lion", "chihuahua", "shih_tzu", "afghan_hound", "basset_hound", "beagle", "bloodhound",
    "italian_greyhound", "whippet", "weimaraner", "yorkshire_terrier", "boston_terrier",
    "scottish_terrier", "west_highland_white_terrier", "golden_retriever", "labrador_retriever",
    "cocker_spaniels", "collie", "border_collie", "rottweiler", "german_shepherd_dog", "boxer",
    "french_bulldog", "saint_bernard", "husky", "dalmatian", "pug", "pomeranian", "chow_chow",
    "pembroke_welsh_corgi", "toy_poodle", "standard_poodle", "timber_wolf", "hyena", "red_fox",
    "tabby_cat", "leopard", "snow_leopard", "lion", "tiger", "cheetah", "polar_bear", "meerkat",
    "ladybug", "fly", "bee", "ant", "grasshopper", "cockroach", "mantis", "dragonfly",
    "monarch_butterfly", "starfish", "wood_rabbit", "porcupine", "fox_squirrel", "beaver",
    "guinea_pig", "zebra", "pig", "hippopotamus", "bison", "gazelle", "llama", "skunk", "badger",
    "orangutan", "gorilla", "chimpanzee", "gibbon", "baboon", "panda", "eel", "clown_fish",
    "puffer_fish", "accordion", "ambulance", "assault_rifle", "backpack", "barn", "wheelbarrow",
    "basketball", "bathtub", "lighthouse", "beer_glass", "binoculars", "birdhouse", "bow_tie",
    "broom", "bucket", "cauldron", "candle", "cannon", "canoe", "carousel", "castle",
    "mobile_phone", "cowboy_hat", "electric_guitar", "fire_engine", "flute", "gasmask",
    "grand_piano", "guillotine", "hammer", "harmonica", "harp", "hatchet", "jeep", "joystick",
    "lab_coat", "lawn_mower", "lipstick", "mailbox", "missile", "mitten", "parachute",
    "pickup_truck", "pirate_ship", "revolver", "rugby_ball", "sandal", "saxophone", "school_bus",
    "schooner", "shield", "soccer_ball", "space_shuttle", "spider_web", "steam_locomotive", "scarf",
    "submarine", "tank", "tennis_ball", "tractor", "trombone", "vase", "violin",
    "military_aircraft", "wine_bottle", "ice_cream", "bagel", "pretzel", "cheeseburger", "hotdog",
    "cabbage", "broccoli", "cucumber", "bell_pepper", "mushroom", "Granny_Smith", "strawberry",
    "lemon", "pineapple", "banana", "pomegranate", "pizza", "burrito", "espresso", "volcano",
    "baseball_player", "scuba_diver", "acorn",
)

CIFAR100_TEMPLATES = ("a bad photo of a {}.",)

IMAGENET_R_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
