"""The service layer: one GenerationService used by every entry point."""
