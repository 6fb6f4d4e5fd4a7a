"""The offline demo model and its adapters: where they live, what they are called, and old data dirs moved."""
