"""Stable Diffusion 3: generation (`generate`, T5 budget and flow samplers) and its IP-Adapter (`ip_adapter`)."""
