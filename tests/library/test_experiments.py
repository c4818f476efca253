"""The store experiment's spare stores: deleted before the next repeat when they are few files,
kept for the merge when they are many; every repeat verified either way."""
import numpy as np
import pytest

from imgbench.bench import many
from helpers import photos


@pytest.mark.parametrize("name, spares_kept", [("npy", 0), ("disk", 3)])
def test_spare_stores_by_file_count(tmp_path, monkeypatch, name, spares_kept):
    monkeypatch.setattr(many, "MANY_FILES", 50)  # disk's 60 images are 62 files: many; npy's 3: few
    images, labels = photos(60)
    seen = []
    real = many.timed

    def spy(fn, *args, **kwargs):  # what exists beside the store at the moment each repeat starts
        if getattr(fn, "__name__", "") == "store_many" and "repeat" in str(args[0]):
            seen.append(sorted(p.name for p in (tmp_path / "stores").iterdir()))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(many, "timed", spy)
    rows = many.store_many(name, {}, images, labels, tmp_path / "stores" / "60", 3, "t", log=lambda m: None,
                           trash=tmp_path / "trash")
    assert [r["verified"] for r in rows] == [True] * 3 and len(seen) == 3
    if spares_kept:  # nothing deleted while repeats run; the spares wait in the trash
        assert seen[2] == [".60.repeat1", ".60.repeat2", ".60.warmup"]
        assert len(list((tmp_path / "trash").iterdir())) == spares_kept
        (tmp_path / "trash" / "a file").write_text("x")
        many.empty_trash(tmp_path / "trash")  # the empty_trash rule's job: the stores in parallel, then the rest
        assert not (tmp_path / "trash").exists()
    else:  # each repeat starts with no other store beside it
        assert seen == [[], [], []] and not (tmp_path / "trash").exists()
    got, got_labels = many.variant(name).read_many(tmp_path / "stores" / "60")
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)
