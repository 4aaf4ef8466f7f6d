"""Partitions: paintings are processed in image batches (``batch-00000``, ...), added as NGA grows."""

from dagster import DynamicPartitionsDefinition

IMAGE_BATCHES = "image_batches"

image_batches = DynamicPartitionsDefinition(name=IMAGE_BATCHES)
