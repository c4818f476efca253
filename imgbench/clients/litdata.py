"""LitData's optimized chunks through `litdata.StreamingDataset`, as its docs show: the store's
directory as `input_dir`; `ds[i]` for an item (it has random access by index); an epoch is the
dataset itself, shuffled by LitData (`shuffle=True`: the chunks' order, then items within a
chunk, its documented scheme) and batched by its `StreamingDataLoader`. Encoded images (bytes)
are decoded with Pillow; raw ones come back as numpy arrays."""
from __future__ import annotations

import numpy as np

from .base import StockReader, decode
from .tar import lists


def _image(item, channels):
    image = item["image"]
    if isinstance(image, np.ndarray):
        return image
    return decode(image, item.get("channels", channels))


try:
    from litdata import StreamingDataLoader, StreamingDataset
except ImportError:  # an optional extra: without it the litdata backend is left out of a run
    StreamingDataLoader = StreamingDataset = object


class Stream(StreamingDataset):
    """A StreamingDataset whose items are (id, image, label), batched by StreamingDataLoader."""

    def __init__(self, path, channels, ragged, **kw):
        super().__init__(path, **kw)
        self.channels, self.ragged = channels, ragged

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return item["id"], _image(item, self.channels), item["label"]

    def dataloader(self, **kw):
        if self.ragged:  # images of different shapes stay a list
            kw["collate_fn"] = lists
        return StreamingDataLoader(self, **kw)


class Litdata(StockReader):
    streams = True

    def open(self):
        self.ds = StreamingDataset(str(self.path))

    def item(self, i):
        got = self.ds[i]
        return _image(got, self.shape[2] if self.shape else None), int(got["label"])

    def stream(self, shuffled: bool = False, seed: int = 0, batch_size: int | None = None, buffer: int = 0):
        """The dataset an epoch iterates: (id, image, label) items, in LitData's order."""
        channels = self.shape[2] if self.shape else None
        return Stream(str(self.path), channels, self.shape is None, shuffle=shuffled, seed=seed)

    def read_all(self):
        self._ready()
        images, labels = [], []
        for item in self.ds:  # in order: not shuffled
            images.append(_image(item, self.shape[2] if self.shape else None))
            labels.append(int(item["label"]))
        return (np.stack(images) if self.shape is not None else images), np.array(labels, np.int64)
