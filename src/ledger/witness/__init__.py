"""Witnesses (C2SP tlog-witness): the server that cosigns a log's tree heads (`server`, `state`) and the
log side's client. Importing this package loads nothing; import the module you need."""
