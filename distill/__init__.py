"""Teacher -> student distillation and generator fine-tuning (issues 3 and 4; not built yet)."""
