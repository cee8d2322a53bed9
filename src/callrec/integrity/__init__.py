"""Tamper evidence: the installation's signing key, signatures of the recordings' hash chain,
and verification of the chain, its signatures and the files (docs/integrity.md).

The chain itself (its tables and how entries are appended) is the catalogue's:
:mod:`callrec.catalog.integrity`.
"""
