"""Data stages on datatrove: sources, download, readers, filters, dedup, writers, token shards."""
