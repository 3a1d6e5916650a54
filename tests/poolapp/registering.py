"""A user module that registers a model class when it is imported."""

from torch import nn

from hyrax.models import hyrax_model


@hyrax_model
class ImportedModel(nn.Module):
    def forward(self, x):
        return x
