"""Python stacks through py-spy: back-to-back recording windows, the supervised py-spy process,
its output parser."""
