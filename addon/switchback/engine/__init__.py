"""The attempt engine: the upstream client, the attempt loop, the first-chunk
gate, stream delivery and the loopback relay. This is where the I/O lives."""
