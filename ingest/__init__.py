"""Files -> documents -> chunks, kept in a document store."""
