"""The sidecar agent: samples one model server (stacks, GPU, host, requests) and ships it to a
collector."""
