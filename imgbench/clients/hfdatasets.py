"""Hugging Face datasets, as its docs show: `datasets.load_from_disk(path)` per process (the
Arrow files memory-mapped), `.with_format("numpy")`, `ds[ids]` for a batch (the `Image`
feature decoded by datasets with Pillow; raw `Array3D` as arrays) and `ds[:]` for the whole
store. Shuffled reads as its docs discuss them are the shuffle measures' (`shuffle()` with and
without `flatten_indices()`): here a batch is a list of ids, as a sampler gives."""
from __future__ import annotations

import numpy as np

from .base import StockReader, pixels

SHAPE = ["height", "width", "channels"]


class HfDatasets(StockReader):
    def open(self):
        import datasets

        self.ds = datasets.load_from_disk(str(self.path / "images.hf")).with_format("numpy")

    def _images(self, got):
        images = got["image"]
        if self.shape is None:  # each image its own array (or PIL image, which numpy format converts)
            images = [np.asarray(im) for im in images]
            images = [im[..., None] if im.ndim == 2 else im for im in images]
            if self.encoding != "raw":
                channels = got["channels"]
                images = [_channels(im, int(c)) for im, c in zip(images, channels)]
            return images
        images = np.asarray(images, np.uint8) if not isinstance(images, np.ndarray) else images.astype(np.uint8,
                                                                                                       copy=False)
        if images.ndim == 3:  # grey images decode to (H, W)
            images = images[..., None]
        if self.encoding != "raw" and images.shape[-1] != self.shape[-1]:
            images = np.stack([_channels(im, self.shape[-1]) for im in images])
        return images

    def item(self, i):
        return self.item_of_batch(i)

    def batch(self, ids):
        got = self.ds[ids.tolist()]
        return self._images(got), np.asarray(got["label"], np.int64)

    def read_all(self):
        self._ready()
        got = self.ds[:]
        return self._images(got), np.asarray(got["label"], np.int64)


def _channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A decoded image in the store's channels (datasets decodes PNGs to their own mode)."""
    if image.shape[-1] == channels:
        return image
    from PIL import Image

    return pixels(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), channels)
