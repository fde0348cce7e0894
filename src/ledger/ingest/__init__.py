"""Reading files: one `RecordReader` per record format (`jsonl`, `text`, `parquet`) registered in
`formats.READERS`, the `pipeline` that hashes them with the engine's kernel, call-log importers (`calls`)
and checkpoint weights (`weights`)."""
