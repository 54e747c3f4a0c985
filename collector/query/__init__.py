"""Pure queries over profiles: the merged call tree of a window and the diff of two windows."""
