"""Core layer: errors, registries, paths, file helpers (SHA-256, atomic writes), safe YAML,
distributed helpers and the version. Imports nothing else from domainclip."""
