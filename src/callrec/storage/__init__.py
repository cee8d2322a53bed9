"""The object storage tier (issue 17 part 1): recordings copied to an S3-compatible store.

* :mod:`callrec.storage.location`: ``storage_url`` and the key of each file (no I/O).
* :mod:`callrec.storage.client`: :class:`ObjectStore`, boto3's S3 client behind the few calls
  callrec makes (put and verify, ranged reads, delete, the bucket made when missing).
* :mod:`callrec.storage.files`: a recording's files, uploading and verifying them, removing
  local copies, hashing the store's: the blocking work the jobs and ``verify`` call on
  threads (the web's reads from the store are :mod:`callrec.web.stored`).

The catalogue's side (which file is where, verified when) is :mod:`callrec.catalog.objects`;
the jobs that move files are :mod:`callrec.jobs.upload`. Nothing here imports a front end.
"""

from callrec.storage.location import StorageLocation, owner_of

__all__ = ["StorageLocation", "owner_of"]
