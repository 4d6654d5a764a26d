"""Ingest: read each raw source, validate every row against its YAML source mapping, quarantine bad
rows with a reason, and map good rows onto the canonical columns of the store (:mod:`omnicrm.schema`)."""

from omnicrm.ingest.mapping import FieldSpec, KeySpec, SourceMapping, load_mapping

__all__ = ["FieldSpec", "KeySpec", "SourceMapping", "load_mapping"]
