"""A small user package written to the Hyrax model and data set contract, as a scientist would."""
