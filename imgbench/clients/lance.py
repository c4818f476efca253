"""Lance through pylance, as its docs show: `lance.dataset(path)` per process, `ds.take(indices,
columns=...)` for a batch (its batched random access) and for an item, `ds.to_table()` for the
whole store; the `image` values decoded with Pillow (PNG, JPEG, original files) or viewed as
pixels (raw). Lance's docs ask for spawned, not forked, worker processes: a DataLoader over this
reader spawns its workers."""
from __future__ import annotations

from .base import SHAPE, StockReader, arrow_images


class Lance(StockReader):
    multiprocessing_context = "spawn"  # Lance's PyTorch page: prefer spawn to fork

    def open(self):
        import lance

        self.ds = lance.dataset(str(self.path / "images.lance"))
        self.columns = ["label", "image"] + (SHAPE if self.shape is None else [])

    def _images(self, rows):
        return arrow_images(rows, self.shape, self.encoding)

    def item(self, i):
        return self.item_of_batch(i)

    def batch(self, ids):
        table = self.ds.take(ids, columns=self.columns)
        return self._images(table), table.column("label").to_numpy()

    def read_all(self):
        self._ready()
        table = self.ds.to_table(columns=self.columns)
        return self._images(table), table.column("label").to_numpy()
