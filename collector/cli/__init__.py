"""The CLI's query commands (services, flamegraph, diff, latency, gpu, process, events,
spikes, event): clients of the HTTP API, standard library only, since the agent image
runs them too. Text for people by default, the API's own answer with --json or -o."""
