"""Parallel compute that knows no file format and no database: `pool.WorkerPool` (the one worker
pool) and `kernel.hash_batch` (the public record-hashing kernel: an Arrow batch of records in, an Arrow
table of digests, segments, fingerprints and leaf hashes out)."""
