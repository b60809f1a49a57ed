"""The store contract suite (SQLite and Redis) and Redis-specific tests."""
