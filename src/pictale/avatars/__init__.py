"""Avatars: named face/style/pose images, LoRAs and embeddings, per owner; upload validation."""
