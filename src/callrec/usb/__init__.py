"""Phone-local (USB) recordings as a source of the engine: one-shot imports into the catalogue.

The file format itself (reading, writing, converting) is a pure core in :mod:`callrec.media`;
this package is the front end that turns such a file into a catalogued recording.
"""
