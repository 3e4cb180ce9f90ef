"""The contracts between the core and its plugins: protocols, typed parameters, the specs plugins
declare, the `Method` protocol, the model and stream contracts, and the hook specifications.

Layer 1: imports only the leaves (errors, paths, files, ...)."""
