"""The shared data pipeline: one registry of datasets, one loader path for all of them."""

from odenet.data.datasets import (DataNotFoundError, DatasetSpec, Loaded, Split, get_dataset_spec, list_datasets,
                                  stratified_split)
from odenet.data.formats import DataFileError
from odenet.data.loaders import BatchTransform, DataBundle, DeviceLoader, InMemoryImages, SeededLoader, build_loaders

__all__ = [
    "BatchTransform", "DataBundle", "DataFileError", "DeviceLoader", "DataNotFoundError", "DatasetSpec", "InMemoryImages", "Loaded",
    "SeededLoader", "Split", "build_loaders", "get_dataset_spec", "list_datasets", "stratified_split",
]
