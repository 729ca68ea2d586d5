"""Generated sample sources, so the whole graph materializes on a fresh machine."""
