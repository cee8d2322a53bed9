"""The phone front end: phones' TCP control sessions and their RTP, fed to the engine.

:class:`~callrec.server.listener.PhoneServer` listens for ``RecordStartRequest`` /
``RecordStopRequest``; each session is a :class:`~callrec.server.source.PhoneSource` (a UDP
port, its RTP stream core, a decoder) that the recording engine pumps; the media sockets are
read together by :class:`~callrec.server.receiver.MediaReceiver`.
"""
