"""Pulled sources: the relay feeds a stream itself by reading a remote source with a supervised ffmpeg.

sources   the strict parse of a stream's `uri` (alternatives separated by spaces)
command   the ffmpeg command line of one pull (`-c copy` to FLV on stdout)
flv       the FLV byte stream on ffmpeg's stdout, parsed incrementally into media packets
process   one ffmpeg child: spawn, read, stop, reap
runner    one stream's pull: alternatives in turn, backoff, the publisher it is to the engine
"""
