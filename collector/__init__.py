"""The collector: gRPC ingest, storage, queries, spike analysis, rendering and the HTTP API;
service.py wires them."""
