"""Helpers shared by the test modules, one job per module: committed test data (``data``), audio
signals, PCM and WAV files (``audio``), RTP packets (``rtp``), FFmpeg as the reference decoder
(``ffmpeg``), free ports (``net``), the settings of a server under test (``settings``),
``callrec serve`` as a real process (``serve``), bounded waits on a condition or an event
(``waiting``), calls recorded through a server's phone front end (``recording``), catalogue rows
(``catalog``), the PostgreSQL server of the catalogue tests (``postgres``), throwaway PostgreSQL
clusters to stop, hang and restart (``pgcluster``), SIP (``sip``) and the web site (``web``).
Fixtures stay in ``conftest.py`` files, which build on these; test modules import helpers from
here and never from each other.
"""
