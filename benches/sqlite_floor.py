#!/usr/bin/env python3
"""What SQLite alone costs for the rows of benches/versus_kcat.sh's json-sqlite row.

Inserts N rows shaped like kdeck's default table (same columns, the same
primary key, ~250 B JSON values, WAL, synchronous=FULL), built in memory
beforehand, in transactions of BATCH rows, with Python's sqlite3 (the rows
are bound in C). No Kafka, no JSON parsing, no schema: the floor under the
sink on this machine.

    python3 benches/sqlite_floor.py            # N=1000000 BATCH=1536
    N=1000000 BATCH=256 SYNC=NORMAL python3 benches/sqlite_floor.py
"""
import os
import sqlite3
import tempfile
import time

n = int(os.environ.get("N", 1_000_000))
batch = int(os.environ.get("BATCH", 1536))
sync = os.environ.get("SYNC", "FULL")

with tempfile.TemporaryDirectory() as d:
    c = sqlite3.connect(os.path.join(d, "floor.sqlite"), isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute(f"PRAGMA synchronous={sync}")
    c.execute("""CREATE TABLE t (topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
        key TEXT, value TEXT, headers TEXT, timestamp INTEGER, headers_b64 TEXT,
        PRIMARY KEY (topic, partition, offset))""")
    pad = "x" * 190
    topic = "bench-1795779343002791542"
    rows = [(topic, i % 6, i // 6, f"key-{i}", '{"n":%d,"customer":"c-%04d","pad":"%s"}' % (i, i % 1000, pad), "{}", 1795779343002, None)
            for i in range(n)]
    wall, cpu = time.time(), time.process_time()
    for s in range(0, n, batch):
        c.execute("BEGIN")
        c.executemany("INSERT INTO t VALUES (?,?,?,?,?,?,?,?)", rows[s:s + batch])
        c.execute("COMMIT")
    wall, cpu = time.time() - wall, time.process_time() - cpu
    print(f"sqlite alone: {n} rows in {wall:.2f} s wall, {cpu:.2f} s CPU: {n / wall:,.0f} rows/s "
          f"(batch {batch}, synchronous={sync})")
