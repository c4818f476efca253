import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgbench.data import folder, sample
from imgbench.errors import UserError
from imgbench.images import decode_file

GOOD = ["a/grey.png", "a/one.png", "a/pal.png", "a/paltrans.png", "a/rgba.png", "a/rot.jpg", "a/two.JPG",
        "a/wide.png", "b/inner/link.png", "b/inner/x.jpeg"]
BAD = ["a/cut.jpg", "b/inner/empty.png"]
KEEP_CHANNELS = {"a/grey.png": 1, "a/one.png": 3, "a/pal.png": 3, "a/paltrans.png": 4, "a/rgba.png": 4,
                 "a/rot.jpg": 3, "a/two.JPG": 3, "a/wide.png": 1, "b/inner/link.png": 3, "b/inner/x.jpeg": 3}


def _rgb(h, w, seed=0):
    """A smooth picture with some noise: JPEG-like content, distinct under rotation."""
    y, x = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    a = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + 2 * y) % 256], axis=-1)
    return (a + rng.integers(0, 20, a.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture
def user_folder(tmp_path):
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b" / "inner").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.fromarray(_rgb(20, 30)).save(root / "a" / "one.png")
    Image.fromarray(_rgb(40, 24, 1)).save(root / "a" / "two.JPG", format="JPEG", quality=90)
    Image.fromarray(_rgb(17, 13, 2)[:, :, 0], "L").save(root / "a" / "grey.png")
    rgba = np.concatenate([_rgb(9, 11, 3), np.full((9, 11, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(root / "a" / "rgba.png")
    pal = Image.fromarray(_rgb(12, 10, 4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(root / "a" / "pal.png")
    pal.save(root / "a" / "paltrans.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgb(20, 30, 5)).save(root / "a" / "rot.jpg", format="JPEG", exif=exif)
    wide = np.array([[65535, 257 * 100], [0, 257]], np.uint16)
    Image.fromarray(wide).save(root / "a" / "wide.png")
    Image.fromarray(_rgb(33, 50, 6)).save(root / "b" / "inner" / "x.jpeg", format="JPEG")
    os.symlink("../../a/one.png", root / "b" / "inner" / "link.png")  # a symlinked file counts
    os.symlink("..", root / "b" / "loop")  # a symlinked directory is not followed
    Image.fromarray(_rgb(8, 8)).save(root / "a" / ".x.jpg", format="JPEG")
    Image.fromarray(_rgb(8, 8)).save(root / ".hidden" / "h.png")
    (root / "notes.txt").write_text("not an image\n")
    (root / "b" / "inner" / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64, 7)).save(buf, format="JPEG", quality=95)
    (root / "a" / "cut.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    return root


def _load(root, **kw):
    lines = []
    data = folder.load(root, log=lines.append, **kw)
    return data, lines


def test_scan_order_and_counts(user_folder):
    files, skipped = folder.scan(user_folder)
    assert files == sorted(GOOD + BAD)
    assert skipped == {"hidden": 2, "not_image": 1, "linked_dirs": 1}
    assert folder.scan(str(user_folder)) == (files, skipped)


@pytest.mark.parametrize("path", ["missing", "notes.txt"])
def test_scan_needs_a_directory(user_folder, path):
    with pytest.raises(folder.FolderError, match="folder.path") as e:
        folder.scan(user_folder / path)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    assert str(user_folder / path) in str(e.value)


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".a.png").write_bytes(b"x")
    with pytest.raises(folder.FolderError, match=r"no image files.*1 hidden, 1 not images"):
        folder.load(tmp_path, log=lambda s: None)


def test_bad_files_raise_one_line_listing_them_all(user_folder):
    with pytest.raises(folder.BadFilesError) as e:
        _load(user_folder)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"2 files under {user_folder} cannot be decoded: a/cut.jpg (")
    assert "b/inner/empty.png (zero bytes)" in msg and msg.endswith("or set folder.on_bad_file: skip")
    assert [p for p, _ in e.value.bad] == BAD
    assert "truncated" in dict(e.value.bad)["a/cut.jpg"]
    for p in GOOD:
        assert p not in msg


def test_many_bad_files_are_counted_not_all_listed(tmp_path):
    (tmp_path / "c").mkdir()
    for k in range(7):
        (tmp_path / "c" / f"{k}.png").write_bytes(b"not a png at all")
    with pytest.raises(folder.BadFilesError) as e:
        folder.load(tmp_path)
    msg = str(e.value)
    assert msg.count("(not an image: cannot identify image file)") == 5 and "and 2 more;" in msg
    assert "c/4.png" in msg and "c/5.png" not in msg


def test_skip_keeps_the_good_files(user_folder):
    data, lines = _load(user_folder, on_bad_file="skip")
    assert data.files == GOOD
    assert [p for p, _ in data.bad] == BAD
    assert data.bad[1] == ("b/inner/empty.png", "zero bytes")
    assert data.classes == ["a", "b/inner"]
    np.testing.assert_array_equal(data.labels, [0] * 8 + [1] * 2)
    assert data.labels.dtype == np.int64
    assert data.skipped["hidden"] == 2 and data.skipped["not_image"] == 1
    assert any(line.startswith("skipping a/cut.jpg: ") for line in lines)
    assert lines[-1].startswith(f"10 images in 2 classes from {user_folder}; skipped: 2 hidden, 1 not images")
    assert "2 bad files" in lines[-1] and "1 16-bit images scaled to 8 bits" in lines[-1]
    assert len(data.images) == len(data.sources) == 10


@pytest.mark.parametrize("mode", ["RGB", "L", "keep"])
def test_modes(user_folder, mode):
    data, _ = _load(user_folder, mode=mode, on_bad_file="skip")
    for rel, im, source in zip(data.files, data.images, data.sources):
        want = {"RGB": 3, "L": 1, "keep": KEEP_CHANNELS[rel]}[mode]
        assert im.dtype == np.uint8 and im.shape[2] == want, rel
        np.testing.assert_array_equal(im, decode_file(source, mode))
    grey = data.images[data.files.index("a/grey.png")]
    assert grey.shape[:2] == (17, 13)


def test_exif_orientation_is_applied(user_folder):
    data, _ = _load(user_folder, on_bad_file="skip")
    got = data.images[data.files.index("a/rot.jpg")]
    with Image.open(user_folder / "a" / "rot.jpg") as im:
        assert im.getexif()[0x0112] == 6
        stored = np.asarray(im.convert("RGB"))
    assert stored.shape == (20, 30, 3) and got.shape == (30, 20, 3)
    np.testing.assert_array_equal(got, np.rot90(stored, k=-1))  # orientation 6: turn 90 degrees clockwise


def test_16_bit_grey_is_scaled(user_folder):
    data, _ = _load(user_folder, mode="keep", on_bad_file="skip")
    np.testing.assert_array_equal(data.images[data.files.index("a/wide.png")][:, :, 0], [[255, 100], [0, 1]])


def test_symlinked_file_is_its_target(user_folder):
    data, _ = _load(user_folder, on_bad_file="skip")
    np.testing.assert_array_equal(data.images[data.files.index("b/inner/link.png")],
                                  data.images[data.files.index("a/one.png")])


def test_truncated_jpeg_is_bad_with_pillow_defaults():
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # else Pillow would fill the missing half with grey


def test_files_directly_under_root(tmp_path):
    Image.fromarray(_rgb(8, 9)).save(tmp_path / "z.png")
    Image.fromarray(_rgb(10, 9)).save(tmp_path / "y.jpg", format="JPEG")
    (tmp_path / "cls").mkdir()
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "cls" / "a.png")
    with pytest.raises(folder.FolderError, match=r"2 images directly under .* \(first: y\.jpg\).*folder\.labels: none"):
        folder.load(tmp_path, log=lambda s: None)
    data, _ = _load(tmp_path, labels="none")
    assert data.files == ["cls/a.png", "y.jpg", "z.png"] and data.classes == ["all"]
    np.testing.assert_array_equal(data.labels, [0, 0, 0])


@pytest.mark.parametrize("kw", [{"labels": "folder"}, {"mode": "RGBA"}, {"on_bad_file": "warn"}])
def test_bad_options(user_folder, kw):
    with pytest.raises(folder.FolderError, match=f"folder.{next(iter(kw))} must be one of"):
        folder.load(user_folder, **kw)


def test_save_and_load_saved_round_trip(user_folder, tmp_path):
    data, _ = _load(user_folder, mode="keep", on_bad_file="skip")
    out = tmp_path / "out"
    folder.save(data, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["pixels.npy", "shapes.npy", "labels.npy", "classes.json", "sources.npy", "source_sizes.npy", "files.txt",
         "skipped.txt"])
    assert (out / "files.txt").read_text() == "".join(f + "\n" for f in GOOD)
    assert (out / "skipped.txt").read_text() == f"a/cut.jpg\t{data.bad[0][1]}\nb/inner/empty.png\tzero bytes\n"
    back = folder.load_saved(out)
    assert isinstance(back.images.data, np.memmap) and isinstance(back.sources.data, np.memmap)
    assert back.files == data.files and back.classes == data.classes and back.bad == data.bad
    np.testing.assert_array_equal(back.labels, data.labels)
    np.testing.assert_array_equal(back.images.shapes, data.images.shapes)
    for a, b in zip(back.images, data.images):
        np.testing.assert_array_equal(a, b)
    for k, rel in enumerate(back.files):
        assert bytes(back.sources[k]) == (user_folder / rel).read_bytes()
        np.testing.assert_array_equal(decode_file(back.sources[k], "keep"), back.images[k])


def test_save_without_bad_files_writes_empty_skipped(tmp_path):
    (tmp_path / "in" / "c").mkdir(parents=True)
    Image.fromarray(_rgb(8, 9)).save(tmp_path / "in" / "c" / "z.png")
    folder.save(folder.load(tmp_path / "in", log=lambda s: None), tmp_path / "out")
    assert (tmp_path / "out" / "skipped.txt").read_bytes() == b""
    assert folder.load_saved(tmp_path / "out").bad == []


# ---------------------------------------------------------------------------- the sample folder


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample") / "photos"
    sample.build_folder(root, n_files=200, seed=0)
    return root


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_folder_is_deterministic(sample_folder, tmp_path):
    sample.build_folder(tmp_path / "same", n_files=200, seed=0)
    sample.build_folder(tmp_path / "other", n_files=200, seed=1)
    ours, same, other = _tree(sample_folder), _tree(tmp_path / "same"), _tree(tmp_path / "other")
    assert ours == same
    common = set(ours) & set(other)
    assert sum(ours[k] != other[k] for k in common) > len(common) // 2


def test_sample_folder_contents(sample_folder):
    files, skipped = folder.scan(sample_folder)
    assert len(files) == 200 and skipped == {"hidden": 1, "not_image": 0, "linked_dirs": 0}  # the marker
    classes = {f.split("/")[0] for f in files}  # one per photograph
    assert classes <= set(sample.PHOTOGRAPHS) and len(classes) >= 18
    assert {os.path.splitext(f)[1] for f in files} >= {".jpg", ".JPG", ".jpeg", ".png"}
    modes, rotated = [], 0
    for f in files:
        with Image.open(sample_folder / f) as im:
            modes.append(im.mode)
            rotated += im.format == "JPEG" and im.getexif().get(0x0112) in (6, 8)
            assert im.format == ("PNG" if f.lower().endswith(".png") else "JPEG")
    assert modes.count("L") >= 1 and modes.count("RGBA") >= 1 and rotated >= 1
    data, lines = _load(sample_folder, mode="keep", workers=4)
    assert data.bad == [] and data.files == files and len(data.classes) == len(classes)
    hw = data.images.shapes[:, :2]
    assert hw.min() >= 64 and hw.max() <= 1024 and hw.max() > 640
    assert 50_000 < (hw[:, 0] * hw[:, 1]).mean() < 200_000
    with Image.open(sample_folder / files[0]) as im:
        assert im.format == "JPEG" or files[0].lower().endswith(".png")
    progressive = sum(Image.open(sample_folder / f).info.get("progressive", 0) for f in files
                      if f.lower().endswith((".jpg", ".jpeg")))
    assert progressive >= 10  # some progressive JPEGs, as cameras and web exports write them
    assert len(np.unique(hw[:, 0] * 1000 // hw[:, 1])) > 50  # varied aspect ratios
    sequential, _ = _load(sample_folder, mode="keep", workers=1)
    assert sequential.files == data.files
    for a, b in zip(sequential.images, data.images):
        np.testing.assert_array_equal(a, b)


def test_sample_folder_replaces_only_its_own(tmp_path):
    root = tmp_path / "s"
    sample.build_folder(root, n_files=30, seed=0)
    sample.build_folder(root, n_files=20, seed=0)  # its own earlier build: replaced
    assert len(folder.scan(root)[0]) == 20
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a sample folder"):
        sample.build_folder(mine, n_files=20)
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert not any(p.name.startswith(".mine") for p in tmp_path.iterdir())
