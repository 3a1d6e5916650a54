"""Hyrax's own spellings, mapped onto our config: `name` choices, Hyrax TOML files, `[general]` and
`[data_loader]`, per-class tables and the defaults a user package ships for its classes.

Everything here turns a Hyrax spelling into the one our Hydra config already has, before or right
after composition, so the training code sees one config shape.
"""
