"""Moving a team from the original Go runtime (matrix-runtime) to MatrixCloud.

``manage.py import_original`` reads the original's database (SQLite file or PostgreSQL
schema, `source`), maps its rows to ours with their ids (`mapping`), decides per row
what to do against what we already hold (`plan`) and writes it in one transaction
(`services`). Provider secrets are opened with the original's key (`secretbox`).
"""

from matrixcloud.importer.errors import ImportFailed
from matrixcloud.importer.plan import Action, ImportReport
from matrixcloud.importer.services import original_import

__all__ = ["Action", "ImportFailed", "ImportReport", "original_import"]
