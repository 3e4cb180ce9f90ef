"""Image data that installs from packages (docs/streams.md): nothing is downloaded.

Sources:
- Fashion-MNIST from Debian's `dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist;
  `CL_BENCH_FASHION_MNIST=DIR` points elsewhere, for example at the four upstream *-ubyte.gz files).
- scikit-learn's `load_digits` (1,797 handwritten digits, 8x8, shipped inside scikit-learn).
- Glyphs (letters, symbols) rendered from the TrueType fonts that ship inside matplotlib.

Every source returns uint8 images of shape (N, 28, 28), white on black like MNIST, and int64 labels.
Splits are fixed index sets chosen by a fixed generator, independent of the run's seed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench import UserError, file_sha256

IMAGE_SIZE = 28
FASHION_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DIGIT_CLASSES = tuple(f"digit {n}" for n in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTER_CLASSES = tuple(f"letter {c}" for c in LETTERS)
SYMBOLS = {
    "+": "plus sign",
    "%": "percent sign",
    "&": "ampersand",
    "@": "at sign",
    "#": "hash sign",
    "$": "dollar sign",
    "?": "question mark",
    "!": "exclamation mark",
    "=": "equals sign",
    "*": "asterisk",
}
# Fonts that cover Latin letters and ASCII symbols with the standard character map.
GLYPH_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)


@dataclass
class Images:
    """Images (N, 28, 28) uint8 with int64 labels indexing `class_names`."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    provenance: dict = field(default_factory=dict)

    def subset(self, index: np.ndarray) -> Images:
        return Images(self.images[index], self.labels[index], self.class_names, self.provenance)

    def concat(self, other: Images) -> Images:
        if other.class_names != self.class_names:
            raise ValueError("only images of the same classes can be joined")
        sources = [self.provenance, other.provenance]
        return Images(np.concatenate([self.images, other.images]), np.concatenate([self.labels, other.labels]), self.class_names, {"parts": sources})

    def sha256(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).astype("<i8").tobytes())
        return digest.hexdigest()


def per_class_splits(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint per-class index sets: `sizes[name]` samples of every class, from a fixed shuffle."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[np.ndarray]] = {name: [] for name in sizes}
    for cls in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(labels == cls))
        need = sum(sizes.values())
        if len(pool) < need:
            raise ValueError(f"class {cls} has {len(pool)} samples, the splits need {need}")
        start = 0
        for name, size in sizes.items():
            splits[name].append(pool[start : start + size])
            start += size
    return {name: np.sort(np.concatenate(parts)) for name, parts in splits.items()}


# ------------------------------------------------------------------------------------ Fashion-MNIST


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("CL_BENCH_FASHION_MNIST", FASHION_DEBIAN_DIR))


def fashion_mnist_missing() -> str | None:
    """None when the Fashion-MNIST files are present, else what is missing and how to get it."""
    root = fashion_mnist_dir()
    missing = [name for pair in FASHION_FILES.values() for name in pair if not (root / name).is_file()]
    if not missing:
        return None
    return (
        f"Fashion-MNIST not found: {root / missing[0]} is missing. Install the Debian package "
        "(sudo apt-get install dataset-fashion-mnist) or set CL_BENCH_FASHION_MNIST to a folder "
        "holding the four *-ubyte.gz files"
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    header_ints = 4 if magic == 2051 else 2
    header = np.frombuffer(data, dtype=">i4", count=header_ints)
    if header[0] != magic:
        raise UserError(f"{path} is not an IDX file (magic {header[0]}, expected {magic}); reinstall dataset-fashion-mnist")
    array = np.frombuffer(data, dtype=np.uint8, offset=4 * header_ints)
    return array.reshape(*(int(n) for n in header[1:])) if magic == 2051 else array.astype(np.int64)


def fashion_mnist_files(split: str) -> tuple[Path, Path]:
    """The images and labels files of a split ("train" or "test"); a UserError when any file is missing."""
    problem = fashion_mnist_missing()
    if problem:
        raise UserError(problem)
    image_name, label_name = FASHION_FILES[split]
    return fashion_mnist_dir() / image_name, fashion_mnist_dir() / label_name


def fashion_provenance(split: str) -> dict[str, Any]:
    """What a split of Fashion-MNIST records as its source: the files' sha256 (read, not loaded)."""
    return {"source": "Fashion-MNIST (Debian dataset-fashion-mnist)", "files": {path.name: file_sha256(path) for path in fashion_mnist_files(split)}}


def load_fashion_mnist(split: str) -> Images:
    image_file, label_file = fashion_mnist_files(split)
    try:
        images = _read_idx(image_file, 2051)
        labels = _read_idx(label_file, 2049)
    except (OSError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read Fashion-MNIST from {fashion_mnist_dir()}: {exc}; reinstall dataset-fashion-mnist") from exc
    return Images(np.ascontiguousarray(images), labels, FASHION_CLASSES, fashion_provenance(split))


# ------------------------------------------------------------------------------------ scikit-learn digits


def sklearn_digits_provenance() -> dict[str, Any]:
    return {"source": "scikit-learn load_digits"}


def load_sklearn_digits() -> Images:
    """The 8x8 digits, upscaled to 20x20 and centred in 28x28 as in MNIST's layout."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    out = np.zeros((len(bunch.images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, small in enumerate(bunch.images):
        tile = Image.fromarray(np.round(small * (255.0 / 16.0)).astype(np.uint8)).resize((20, 20), Image.BILINEAR)  # type: ignore[attr-defined]  # set at runtime (Pillow >= 9 also names it Image.Resampling.BILINEAR); the floor pillow>=9.0 predates Resampling
        out[i, 4:24, 4:24] = np.asarray(tile)
    return Images(out, bunch.target.astype(np.int64), DIGIT_CLASSES, sklearn_digits_provenance())


# ------------------------------------------------------------------------------------ rendered glyphs


def _font_paths() -> list[Path]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [root / name for name in GLYPH_FONTS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"matplotlib's fonts are missing ({missing[0]}); reinstall matplotlib")
    return paths


@cache
def font_sha256() -> dict[str, str]:
    """The sha256 of every font the glyphs are rendered from, by file name."""
    return {path.name: file_sha256(path) for path in _font_paths()}


def glyph_provenance(fonts: tuple[int, ...] | None = None) -> dict[str, Any]:
    """What rendered glyphs record as their source: the fonts drawn from (indices into GLYPH_FONTS, None for all)."""
    return {"source": "glyphs rendered from matplotlib's bundled fonts", "fonts": [GLYPH_FONTS[i] for i in (fonts if fonts is not None else range(len(GLYPH_FONTS)))]}


def render_glyphs(chars: str, class_names: tuple[str, ...], per_class: int, seed: int, fonts: tuple[int, ...] | None = None) -> Images:
    """Render each character `per_class` times with a random font and a random small affine jitter."""
    from PIL import Image, ImageDraw, ImageFont

    paths = _font_paths()
    chosen = [paths[i] for i in (fonts if fonts is not None else range(len(paths)))]
    loaded = {(str(p), size): ImageFont.truetype(str(p), size) for p in chosen for size in (18, 20, 22)}
    rng = np.random.default_rng(seed)
    images = np.zeros((len(chars) * per_class, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    labels = np.repeat(np.arange(len(chars), dtype=np.int64), per_class)
    canvas = IMAGE_SIZE * 2  # draw large, then transform and crop, so rotations keep the glyph whole
    for n, label in enumerate(labels):
        font = loaded[(str(chosen[rng.integers(len(chosen))]), int(rng.choice((18, 20, 22))))]
        tile = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(tile).text((canvas / 2, canvas / 2), chars[label], fill=255, font=font, anchor="mm")
        angle = float(rng.uniform(-15, 15))
        scale = float(rng.uniform(0.85, 1.1))
        dx, dy = (float(v) for v in rng.uniform(-2.0, 2.0, size=2))
        # Pillow's stubs say int for translate; rotate() feeds it into a float affine matrix.
        tile = tile.rotate(angle, resample=Image.BILINEAR, center=(canvas / 2, canvas / 2), translate=(dx, dy))  # type: ignore[attr-defined, arg-type]
        size = int(round(canvas * scale))
        tile = tile.resize((size, size), Image.BILINEAR)  # type: ignore[attr-defined]  # as above
        left = (size - IMAGE_SIZE) // 2
        images[n] = np.asarray(tile.crop((left, left, left + IMAGE_SIZE, left + IMAGE_SIZE)))
    return Images(images, labels, class_names, glyph_provenance(fonts))


def render_letters(per_class: int, seed: int, fonts: tuple[int, ...] | None = None) -> Images:
    return render_glyphs(LETTERS, LETTER_CLASSES, per_class, seed, fonts)


def render_digits(per_class: int, seed: int, fonts: tuple[int, ...] | None = None) -> Images:
    """Printed digits, a different domain from the handwritten ones (named with the same classes)."""
    return render_glyphs("0123456789", DIGIT_CLASSES, per_class, seed, fonts)


def render_symbols(per_class: int, seed: int, fonts: tuple[int, ...] | None = None) -> Images:
    return render_glyphs("".join(SYMBOLS), tuple(SYMBOLS.values()), per_class, seed, fonts)


# ------------------------------------------------------------------------------------ shifted domains
# Deterministic image shifts that move a domain away from what tiny-clip was pre-trained on, so that
# its zero-shot accuracy drops while fine-tuning can still learn it: the spread MTIL's datasets show
# for CLIP (zero-shot from about 24 % on Aircraft to about 89 % on Oxford Pets).


def _shifted(images: Images, shifted: np.ndarray, transform: str) -> Images:
    return Images(np.ascontiguousarray(shifted), images.labels, images.class_names, {"parts": [images.provenance], "transform": transform})


def rotate(images: Images) -> Images:
    """A quarter turn anticlockwise: a standard shifted domain (as rotated MNIST)."""
    return _shifted(images, np.rot90(images.images, 1, axes=(1, 2)), "rotated 90 degrees anticlockwise")


def pixelate(images: Images, block: int) -> Images:
    """Each `block` x `block` square takes its top-left pixel's value: a coarse, low-resolution capture."""
    shifted = np.repeat(np.repeat(images.images[:, ::block, ::block], block, axis=1), block, axis=2)
    return _shifted(images, shifted[:, :IMAGE_SIZE, :IMAGE_SIZE], f"pixelated in {block}x{block} blocks")


def fade(images: Images, contrast: float, grey: int) -> Images:
    """Contrast cut to `contrast` over a uniform `grey`: a washed-out, under-exposed capture."""
    shifted = np.rint(images.images.astype(np.float64) * contrast + grey).clip(0, 255).astype(np.uint8)
    return _shifted(images, shifted, f"faded to {contrast:g} contrast over grey {grey}")
