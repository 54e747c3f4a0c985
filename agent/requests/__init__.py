"""Per-request records: the datagram the middleware sends, the listener that receives it, the
reverse proxy."""
