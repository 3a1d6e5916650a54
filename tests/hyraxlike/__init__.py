"""Classes written the way Hyrax users and Hyrax itself write them (its built-in models, test fixtures and
documentation notebooks, May 2025 to today), our own code following the same contract. Only the import
lines would differ from a Hyrax user's package. `default_config.toml` ships their defaults, as Hyrax
packages do."""
