"""Model families beyond the UNet ones: the T5 (SD3) family, its flow-matching samplers and IP-Adapter, and
what each family supports."""
