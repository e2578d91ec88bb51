"""The pycaffe build's cache key, patch set and wheel writer (no compiler needed)."""
import dataclasses
import os
import shutil
import zipfile

import pytest

from sparknet_ml.build import cache, patches, source, wheel
from sparknet_ml.build.cache import BuildConfig

BASE = BuildConfig(source_sha256=source.SDIST_SHA256, python_tag="cp311", cuda=False,
                   cuda_arch="", portable=False, patch_set="0123456789ab")


@pytest.mark.parametrize("change", [
    {"source_sha256": "0" * 64}, {"python_tag": "cp312"}, {"cuda": True, "cuda_arch": "90"},
    {"portable": True}, {"patch_set": "ba9876543210"}, {"cudnn": "9.14.0"}])
def test_cache_key_changes_with_each_input(change):
    changed = dataclasses.replace(BASE, **change)
    assert changed.key() != BASE.key()
    assert BASE.key() == dataclasses.replace(BASE).key()


def test_cuda_arch_is_part_of_the_key():
    sm80 = dataclasses.replace(BASE, cuda=True, cuda_arch="80")
    sm90 = dataclasses.replace(BASE, cuda=True, cuda_arch="90")
    assert sm80.key() != sm90.key()
    assert (sm80.variant(), BASE.variant()) == ("cuda80", "cpu")
    assert dataclasses.replace(sm90, cudnn="9.14.0").variant() == "cuda90cudnn9"


def test_patch_set_version_follows_the_recipe_files(tmp_path):
    here = os.path.dirname(cache.__file__)
    for name in cache._RECIPE_MODULES:
        shutil.copy(os.path.join(here, name), tmp_path / name)
    shutil.copytree(os.path.join(here, "layers"), tmp_path / "layers")
    before = cache.patch_set_version(str(tmp_path))
    assert before == cache.patch_set_version(here)
    with open(tmp_path / "patches.py", "a") as f:
        f.write("\n# one more patch\n")
    after_patch = cache.patch_set_version(str(tmp_path))
    assert after_patch != before
    with open(tmp_path / "layers" / "sparknet_transform_layer.cu", "a") as f:
        f.write("\n// one more kernel\n")
    assert cache.patch_set_version(str(tmp_path)) != after_patch


def test_cache_root_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARKNET_ML_CACHE", str(tmp_path))
    assert cache.cache_root() == str(tmp_path)
    monkeypatch.delenv("SPARKNET_ML_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == str(tmp_path / "xdg" / "sparknet_ml")


def test_patches_have_names_and_reasons():
    names = [p.name for p in patches.PATCHES]
    assert len(names) == len(set(names))
    for patch in patches.PATCHES:
        assert patch.why and (patch.edits or patch.removes or patch.adds)


def test_a_patch_adds_files_and_refuses_to_overwrite_one(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    added = patches.Patch("layer", "test", adds=(("src/layer.cu", "sparknet_transform_layer.cu"),))
    monkeypatch.setattr(patches, "PATCHES", (added,))
    assert patches.apply_patches(str(tmp_path)) == ["layer"]
    assert "SparkNetTransformForward" in (tmp_path / "src" / "layer.cu").read_text()
    with pytest.raises(patches.PatchError, match="src/layer.cu is already in the source tree"):
        patches.apply_patches(str(tmp_path))


def test_patch_that_does_not_match_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "a.cpp").write_text("int x;\nint x;\n")
    twice = patches.Patch("twice", "test", edits=(patches.Edit("a.cpp", "int x;", "int y;"),))
    monkeypatch.setattr(patches, "PATCHES", (twice,))
    with pytest.raises(patches.PatchError, match="expected one match in a.cpp, found 2"):
        patches.apply_patches(str(tmp_path))
    gone = patches.Patch("gone", "test", removes=("missing.h",))
    monkeypatch.setattr(patches, "PATCHES", (gone,))
    with pytest.raises(patches.PatchError, match="missing.h is not in the source tree"):
        patches.apply_patches(str(tmp_path))


def test_wrong_source_checksum_is_refused(tmp_path):
    fake = tmp_path / source.SDIST_FILE
    fake.write_bytes(b"not caffe")
    with pytest.raises(source.SourceError, match="is not the pinned"):
        source.resolve_source(str(tmp_path), str(tmp_path / "cache"))
    with pytest.raises(source.SourceError, match="no file"):
        source.resolve_source(str(tmp_path / "nowhere.tar.gz"), str(tmp_path / "cache"))


def test_wheel_record_matches_contents(tmp_path):
    pkg = tmp_path / "caffe"
    (pkg / "proto").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "proto" / "__init__.py").write_text("")
    path = wheel.write_wheel(str(pkg), "9.0.2+cpu.abc", "cp311", {"key": "abc"}, str(tmp_path))
    assert os.path.basename(path) == f"caffe-9.0.2+cpu.abc-cp311-cp311-{wheel.platform_tag()}.whl"
    with zipfile.ZipFile(path) as zf:
        record = zf.read("caffe-9.0.2+cpu.abc.dist-info/RECORD").decode().splitlines()
        rows = {line.split(",")[0]: line.split(",")[1:] for line in record}
        assert set(rows) == set(zf.namelist())
        for name, (digest, size) in rows.items():
            if digest:
                data = zf.read(name)
                assert digest == wheel._record_hash(data) and int(size) == len(data)
        assert b"Requires-Dist: six" in zf.read("caffe-9.0.2+cpu.abc.dist-info/METADATA")
        assert zf.read("caffe/build_info.json") == b'{\n  "key": "abc"\n}'


def test_build_doc_explains_every_patch():
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "caffe-build.md")
    with open(doc) as f:
        text = f.read()
    for patch in patches.PATCHES:
        assert f"| `{patch.name}` |" in text, f"docs/caffe-build.md does not explain {patch.name}"
