"""Moving a team from the original Go runtime (matrix-runtime) to MatrixCloud.

``manage.py import_original`` reads the original's database (SQLite file or PostgreSQL
schema, `source`), maps its rows to ours with their ids (`mapping`), decides per row
what to do against what we already hold (`plan`) and writes it in one transaction
(`services`), recording each row it created in its ledger (`models.ImportedRow`) under
the source's fingerprint, taken from the original's key (`secretbox`), which also opens
its provider secrets. A row here that the ledger does not give to the same source is a
collision: the import lists it and is refused.

This package is a Django app (the ledger's table), so it imports nothing at load time:
import from its modules.
"""
