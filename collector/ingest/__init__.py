"""gRPC ingest: one decoder per agent stream, validation against limits, group commit, acks after
commit."""
