"""Composite PTransforms, DoFns and the data contracts they share."""
