"""The interchange data layer: one Parquet schema for catalogs and sessions, and adapters that write it."""

from sid_index.data.schema import CATALOG_SCHEMA, SESSION_SCHEMA, Dataset, load_dataset, write_dataset

__all__ = ["CATALOG_SCHEMA", "SESSION_SCHEMA", "Dataset", "load_dataset", "write_dataset"]
