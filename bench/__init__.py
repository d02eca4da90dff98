"""`make bench`: start-up, added delay, identity, CPU and memory of the relay beside nginx-rtmp (issue 4)."""
