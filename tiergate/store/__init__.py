"""What happened: the capture store.

SQLAlchemy 2 Core over SQLite (WAL) by default or PostgreSQL by URL. `db.open_store(url)` creates the engine
and runs migrations; `writer.RecordWriter` batches captured records off the request path; `records` and `keys`
hold the queries.
"""
