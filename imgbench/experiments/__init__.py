"""The experiments; each returns tidy rows, one per timed repeat (see common.COLUMNS).

- many: the article's store_many / read_many / single-image experiments, and the same two for
  np.save / np.load of the same arrays (the limit every format is compared with), and Pillow
  decoding the same images' bytes from memory (the limit of encoded stores).
- access: what training does: shuffled epochs from worker processes, random single reads.
"""
from .access import epoch, random_read
from .common import COLUMNS, VerificationError, write_csv
from .many import LIMIT, decode_limit, empty_trash, limit, read_many, single, store_many

__all__ = ["COLUMNS", "LIMIT", "VerificationError", "decode_limit", "empty_trash", "epoch", "limit", "random_read", "read_many",
           "single", "store_many", "write_csv"]
