"""WebDataset shards through the `webdataset` pipeline, as its docs show: shards listed, split over
DataLoader workers, shuffled (`shardshuffle`) and then samples shuffled in a buffer (`.shuffle`),
decoded to uint8 arrays (`.decode("rgb8")`, or "l8"/"rgba8" for grey or RGBA stores; images of
different shapes are decoded as RGB), made tuples and batched inside the pipeline
(`.batched`) for `DataLoader(batch_size=None)`. It streams: there is no random access by id
(webdataset 1.x no longer ships `wids`, its indexed dataset), so a shuffled epoch is a buffered
shuffle, not a permutation, and single random reads are left out."""
from __future__ import annotations

from functools import partial

import numpy as np

from .base import StockReader, pixels

IMAGE = "png;jpg;jpeg;npy;gif;bmp;tif;tiff;webp"  # the member names a store's encodings give
BUFFER = 1000  # samples in the shuffle buffer: the size webdataset's documentation uses (and shards 100)


SPECS = {1: "l8", 3: "rgb8", 4: "rgba8"}  # webdataset's decoders for the store's channels


def with_channel_axis(image):
    """webdataset's "l8" decodes to (H, W): the store's images are (H, W, 1)."""
    return image[..., None]


def lists(samples):
    """A batch of (key, image, label) samples as (keys, images, labels) lists."""
    return tuple(list(column) for column in zip(*samples))


class Tar(StockReader):
    random_access, streams, buffered = False, True, True

    def shards(self) -> list[str]:
        return sorted(str(p) for p in self.path.glob("shard-*.tar"))

    def stream(self, shuffled: bool = False, seed: int = 0, batch_size: int | None = None, buffer: int = BUFFER):
        """The pipeline: (key, image, label) samples, or batches of them with `batch_size`."""
        import webdataset as wds

        shards = self.shards()
        if not shards:
            raise FileNotFoundError(f"{self.path} holds no shard-*.tar")
        # empty_check off: a DataLoader worker left without a shard (a store of fewer shards than
        # workers) yields nothing instead of failing the epoch. detshuffle: the shard order
        # changes with each pass of a persistent worker (with a plain seed every pass repeats it).
        ds = wds.WebDataset(shards, shardshuffle=100 if shuffled else False, detshuffle=True, seed=seed,
                            empty_check=False)
        if shuffled:
            ds = ds.shuffle(buffer)
        channels = self.shape[2] if self.shape is not None else 3
        if self.encoding == "source":
            # webdataset's decoders ignore a photograph's EXIF orientation (a camera's sideways
            # JPEG comes out sideways): Pillow's images, turned upright as Pillow's docs show
            ds = ds.decode("pil").to_tuple("__key__", IMAGE, "cls").map_tuple(None, partial(pixels, channels=channels), None)
        else:
            ds = ds.decode(SPECS[channels]).to_tuple("__key__", IMAGE, "cls")
            if channels == 1:
                ds = ds.map_tuple(None, with_channel_axis, None)
        if not batch_size:
            return ds
        # webdataset stacks a batch's images; images of different shapes stay a list
        return ds.batched(batch_size) if self.shape is not None else ds.batched(batch_size, collation_fn=lists)

    def item(self, i):
        raise TypeError("webdataset streams its shards: it has no random access by id")

    def read_all(self):
        images, labels = [], []
        for _, image, label in self.stream():
            images.append(image)
            labels.append(label)
        return (np.stack(images) if self.shape is not None else images), np.array(labels, np.int64)
