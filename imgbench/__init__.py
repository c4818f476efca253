"""imgbench: store and read lots of images as PNG files, in LMDB or in HDF5, and benchmark them."""
__version__ = "0.1.0"
