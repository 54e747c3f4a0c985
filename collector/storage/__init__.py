"""The storage seam: the Store protocol (store.py), what reads return (reads.py), what ingest
hands over (batch.py)."""
