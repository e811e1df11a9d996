"""Storage: the database engine and sessions, the tables, the blob store and its keys, the broker."""
