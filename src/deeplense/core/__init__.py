"""The core layer: config files, registries, seeding, the runtime, and the file formats that every
other layer shares (data-set directory, run directory, model contract). Imports nothing above it."""
