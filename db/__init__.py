"""SQLAlchemy models, the async database handle, repositories and migrations."""
