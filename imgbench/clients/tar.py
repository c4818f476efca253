"""WebDataset shards through the `webdataset` pipeline, as its docs show: shards listed, split over
DataLoader workers, shuffled (`shardshuffle`) and then samples shuffled in a buffer (`.shuffle`),
decoded to uint8 RGB arrays (`.decode("rgb8")`), made tuples and batched inside the pipeline
(`.batched`) for `DataLoader(batch_size=None)`. It streams: there is no random access by id
(webdataset 1.x no longer ships `wids`, its indexed dataset), so a shuffled epoch is a buffered
shuffle, not a permutation, and single random reads are left out."""
from __future__ import annotations

import numpy as np

from .base import StockReader

IMAGE = "png;jpg;jpeg;npy;gif;bmp;tif;tiff;webp"  # the member names a store's encodings give
BUFFER = 1000  # samples in the shuffle buffer: the size webdataset's documentation uses (and shards 100)


class Tar(StockReader):
    random_access = False

    def shards(self) -> list[str]:
        return sorted(str(p) for p in self.path.glob("shard-*.tar"))

    def stream(self, shuffled: bool = False, seed: int = 0, batch_size: int | None = None, buffer: int = BUFFER):
        """The pipeline: (key, image, label) samples, or batches of them with `batch_size`."""
        import webdataset as wds

        shards = self.shards()
        # empty_check off: a DataLoader worker left without a shard (a store of fewer shards than
        # workers) yields nothing instead of failing the epoch
        ds = wds.WebDataset(shards, shardshuffle=100 if shuffled else False, seed=seed, empty_check=False)
        if shuffled:
            ds = ds.shuffle(buffer, seed=seed)
        ds = ds.decode("rgb8").to_tuple("__key__", IMAGE, "cls")
        return ds.batched(batch_size) if batch_size else ds

    def item(self, i):
        raise TypeError("webdataset streams its shards: it has no random access by id")

    def read_all(self):
        images, labels = [], []
        for _, image, label in self.stream():
            images.append(image)
            labels.append(label)
        return (np.stack(images) if self.shape is not None else images), np.array(labels, np.int64)
