"""The stream cache (`cl_bench.cached_tensors`) and the embedded streams built through it: a warm
build gives the cold one's tensors and metadata exactly; damaged entries are rebuilt; a changed key
makes a new entry; `CL_BENCH_CACHE=off` and an unwritable folder leave the run uncached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import cl_bench
from cl_bench.blocks import tensor_cache
from cl_bench.contracts.specs import resolve_factory
from cl_bench.scenarios import embedded, packaged_data

MEMOS = (embedded.fashion, embedded.digits, embedded.letters, embedded.symbols, embedded.printed_digits, embedded.rotated_digits)


def forget_built_domains() -> None:
    """Make the next build start over, as a new process would (the cache on disk stays)."""
    for memo in (*MEMOS, embedded._library_versions, embedded._code_sha256, packaged_data.font_sha256):
        getattr(memo, "cache_clear", lambda: None)()  # a test may have replaced one


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CL_BENCH_CACHE", str(folder))
    monkeypatch.setattr(tensor_cache, "_warned", set())
    forget_built_domains()
    yield folder
    forget_built_domains()  # later tests build from wherever their own environment says


class Counted:
    """A build function that counts its calls."""

    def __init__(self, value: int = 3) -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"images": torch.arange(12, dtype=torch.uint8).reshape(3, 4) * self.value, "labels": torch.tensor([0, 1, 2])}


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def stream_tensors(stream) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every experience's images and targets, train, test and control, in order."""
    found = []
    for part, experiences in stream.benchmark.streams.items():
        for experience in experiences:
            batch = next(iter(DataLoader(experience.dataset, batch_size=len(experience.dataset))))
            found.append((part, batch[0], batch[1]))
    return found


@pytest.mark.parametrize("name, params", [("embedded-mtil", {}), ("embedded-cil", {"tasks": 5}), ("embedded-dil", {}), ("embedded-xtail", {"shots": 16})])
def test_a_warm_build_gives_the_cold_builds_tensors_and_metadata(registry, cache, name, params):
    spec = registry.scenarios()[name]
    factory = resolve_factory(spec.factory)
    cold = factory(spec.resolve(params), None)
    written = entries(cache)
    assert written and all(n.endswith((".json", ".safetensors")) for n in written)
    forget_built_domains()
    warm = factory(spec.resolve(params), None)
    assert entries(cache) == written  # read, not rewritten under new names
    assert json.dumps(warm.describe()) == json.dumps(cold.describe())  # sizes, sha256 and provenance of every split
    cold_tensors, warm_tensors = stream_tensors(cold), stream_tensors(warm)
    assert len(warm_tensors) == len(cold_tensors) > 0
    for (part, x, y), (warm_part, warm_x, warm_y) in zip(cold_tensors, warm_tensors):
        assert part == warm_part and x.dtype == warm_x.dtype and y.dtype == warm_y.dtype
        assert torch.equal(x, warm_x) and torch.equal(y, warm_y)


def test_the_cache_is_off_and_a_domain_builds_as_before_without_it(registry, cache, monkeypatch):
    symbols = embedded.symbols()
    cached = {split: (images.images.copy(), images.labels.copy(), images.provenance) for split, images in symbols.splits.items()}
    monkeypatch.setenv("CL_BENCH_CACHE", "off")
    forget_built_domains()
    uncached = embedded.symbols()
    assert list(uncached.splits) == list(cached)
    for split, images in uncached.splits.items():
        assert (images.images == cached[split][0]).all() and (images.labels == cached[split][1]).all() and images.provenance == cached[split][2]
    build = Counted()
    assert torch.equal(cl_bench.cached_tensors({"toy": 1}, build, "toy")["images"], build()["images"])
    cl_bench.cached_tensors({"toy": 1}, build, "toy")
    assert build.calls == 3  # every call builds
    assert tensor_cache.cache_folder() is None


def test_the_folder_is_the_variable_else_the_user_cache(monkeypatch, tmp_path):
    from platformdirs import user_cache_dir

    monkeypatch.setenv("CL_BENCH_CACHE", str(tmp_path))
    assert tensor_cache.cache_folder() == tmp_path
    monkeypatch.delenv("CL_BENCH_CACHE")
    assert tensor_cache.cache_folder() == Path(user_cache_dir("cl_bench")) / "streams"
    for unset in ("", "  "):  # empty counts as unset
        monkeypatch.setenv("CL_BENCH_CACHE", unset)
        assert tensor_cache.cache_folder() == Path(user_cache_dir("cl_bench")) / "streams"
    for off in ("off", "OFF"):
        monkeypatch.setenv("CL_BENCH_CACHE", off)
        assert tensor_cache.cache_folder() is None


def test_an_entry_is_read_back_exactly_with_its_manifest(cache):
    build = Counted()
    first = cl_bench.cached_tensors({"toy": 1}, build, "toy tensors")
    second = cl_bench.cached_tensors({"toy": 1}, build, "toy tensors")
    assert build.calls == 1 and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) and first[k].dtype == second[k].dtype for k in first)
    name = tensor_cache.entry_name({"toy": 1})
    assert entries(cache) == [f"{name}.json", f"{name}.safetensors"]  # no temporary left behind
    manifest = json.loads((cache / f"{name}.json").read_text())
    assert manifest["key"] == {"toy": 1} and manifest["what"] == "toy tensors"
    assert manifest["sha256"] == cl_bench.file_sha256(cache / f"{name}.safetensors") and manifest["versions"]["torch"] == torch.__version__
    raw = (cache / f"{name}.safetensors").read_bytes()  # safetensors (a length, a JSON header, the bytes), not a pickle
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["images"]["dtype"] == "U8" and header["labels"]["shape"] == [3]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data, manifest: data.write_bytes(data.read_bytes()[:-5] + b"xxxxx"), id="flipped-bytes"),
        pytest.param(lambda data, manifest: data.write_bytes(data.read_bytes()[:20]), id="truncated"),
        pytest.param(lambda data, manifest: data.write_bytes(b""), id="empty"),
        pytest.param(lambda data, manifest: manifest.write_text("{not json"), id="bad-manifest"),
        pytest.param(lambda data, manifest: manifest.write_text(manifest.read_text().replace('"toy":1', '"toy":2').replace('"toy": 1', '"toy": 2')), id="other-key"),
    ],
)
def test_a_damaged_entry_is_rebuilt_and_rewritten_with_one_warning(cache, capsys, damage):
    build = Counted()
    expected = cl_bench.cached_tensors({"toy": 1}, build, "toy tensors")
    name = tensor_cache.entry_name({"toy": 1})
    damage(cache / f"{name}.safetensors", cache / f"{name}.json")
    capsys.readouterr()
    again = cl_bench.cached_tensors({"toy": 1}, build, "toy tensors")
    err = capsys.readouterr().err
    assert build.calls == 2 and all(torch.equal(expected[k], again[k]) for k in expected)
    assert err.count("\n") == 1 and "warning" in err and "toy tensors" in err and "rebuilding" in err
    cl_bench.cached_tensors({"toy": 1}, build, "toy tensors")  # rewritten: read back, silently
    assert build.calls == 2 and capsys.readouterr().err == ""


def test_a_damaged_domain_is_rebuilt_to_the_same_images(cache, capsys):
    before = {split: images.sha256() for split, images in embedded.symbols().splits.items()}
    for path in cache.glob("*.safetensors"):
        raw = path.read_bytes()
        path.write_bytes(raw[:-100] + bytes(b ^ 0xFF for b in raw[-100:]))  # the last image's last rows, inverted
    forget_built_domains()
    capsys.readouterr()
    assert {split: images.sha256() for split, images in embedded.symbols().splits.items()} == before
    assert "embedded domain symbols" in capsys.readouterr().err


def test_a_deleted_entry_is_built_again_silently(cache, capsys):
    build = Counted()
    cl_bench.cached_tensors({"toy": 1}, build, "toy")
    for path in cache.glob("*.safetensors"):
        path.unlink()
    cl_bench.cached_tensors({"toy": 1}, build, "toy")
    assert build.calls == 2 and capsys.readouterr().err == ""


def test_a_changed_key_makes_a_new_entry(cache):
    build = Counted()
    key = {"stream": "toy", "params": {"shots": 16}, "image_size": 28, "sources": {"a.gz": "0" * 64}}
    cl_bench.cached_tensors(key, build, "toy")
    changed = [{**key, "params": {"shots": 8}}, {**key, "image_size": 32}, {**key, "sources": {"a.gz": "1" * 64}}]
    for other in changed:
        cl_bench.cached_tensors(other, build, "toy")
    assert build.calls == 4 and len(entries(cache)) == 8
    reordered = {"sources": {"a.gz": "0" * 64}, "image_size": 28, "params": {"shots": 16}, "stream": "toy"}
    cl_bench.cached_tensors(reordered, build, "toy")  # the same key, written in another order
    assert build.calls == 4
    with pytest.raises(ValueError, match="JSON"):
        cl_bench.cached_tensors({"bad": object()}, build, "toy")
    with pytest.raises(TypeError, match="mapping of names"):
        cl_bench.cached_tensors({"toy": "list"}, lambda: [torch.zeros(1)], "toy")  # type: ignore[arg-type, return-value]


def test_a_domains_key_follows_its_code_and_sources(cache, monkeypatch):
    embedded.symbols()
    first = entries(cache)
    forget_built_domains()
    monkeypatch.setattr(embedded, "DATA_VERSION", embedded.DATA_VERSION + "-changed")
    embedded.symbols()
    assert len(entries(cache)) == len(first) + 2  # a new entry beside the old one
    forget_built_domains()
    real = packaged_data.font_sha256()
    monkeypatch.setattr(packaged_data, "font_sha256", lambda: {**real, "DejaVuSans.ttf": "0" * 64})
    embedded.symbols()
    assert len(entries(cache)) == len(first) + 4
    manifest = json.loads(next(cache.glob("*.json")).read_text())
    key = manifest["key"]
    assert key["domain"] == "symbols" and set(key) >= {"stream_version", "data_version", "code", "provenance", "sources", "libraries"}
    assert set(key["libraries"]) >= {"numpy", "pillow", "matplotlib", "scikit-learn", "torch", "freetype2"}
    assert key["code"]["embedded.py"] and key["code"]["packaged_data.py"]


def test_fashion_s_key_holds_its_files_sha256(cache):
    embedded.fashion()
    (manifest,) = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    folder = packaged_data.fashion_mnist_dir()
    assert manifest["key"]["sources"] == {n: cl_bench.file_sha256(folder / n) for pair in packaged_data.FASHION_FILES.values() for n in pair}


def test_an_unwritable_folder_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CL_BENCH_CACHE", str(blocker / "cache"))  # cannot be made, even by root
    monkeypatch.setattr(tensor_cache, "_warned", set())
    build = Counted()
    first = cl_bench.cached_tensors({"toy": 1}, build, "toy")
    cl_bench.cached_tensors({"toy": 2}, build, "toy")
    err = capsys.readouterr().err
    assert build.calls == 2 and torch.equal(first["labels"], torch.tensor([0, 1, 2]))
    assert err.count("\n") == 1 and "cannot write the cache" in err and "CL_BENCH_CACHE" in err
    forget_built_domains()
    try:
        assert len(embedded.symbols().splits["test"].labels) == 10 * embedded.SYMBOL_SIZES["test"]
    finally:
        forget_built_domains()
    assert capsys.readouterr().err == ""  # told once per process


def test_a_read_only_folder_serves_what_it_holds(cache, capsys):
    build = Counted()
    cl_bench.cached_tensors({"toy": 1}, build, "toy")
    cache.chmod(0o555)
    try:
        cl_bench.cached_tensors({"toy": 1}, build, "toy")
        assert build.calls == 1 and capsys.readouterr().err == ""
    finally:
        cache.chmod(0o755)
