"""Every format by name: the one table a new format is added to (lookup.py finds them by it)."""

# name -> (module, class); modules import lazily so one format's library is loaded only when used
FORMATS = {
    # the article's own three methods, faithfully, to compare each of its choices with ours
    "article-disk": ("article_disk", "ArticleDiskBackend"),
    "article-lmdb": ("article_lmdb", "ArticleLmdbBackend"),
    "article-hdf5": ("article_hdf5", "ArticleHdf5Backend"),
    "disk": ("disk", "DiskBackend"),
    "lmdb": ("lmdb_store", "LmdbBackend"),
    "hdf5": ("hdf5_store", "Hdf5Backend"),
    "npy": ("npy_store", "NpyBackend"),
    "zarr": ("zarr_store", "ZarrBackend"),
    "tar": ("tar_store", "TarBackend"),
    "parquet": ("parquet_store", "ParquetBackend"),
    "sqlite": ("sqlite_store", "SqliteBackend"),
    "lance": ("lance_store", "LanceBackend"),
    "hfdatasets": ("hfdatasets_store", "HfDatasetsBackend"),
    "litdata": ("litdata_store", "LitdataBackend"),  # optional extra: pip install 'imgbench[litdata]'
}
PACKAGE = __name__.rpartition(".")[0]
