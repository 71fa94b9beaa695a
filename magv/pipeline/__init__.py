"""The MAG-V pipeline: one module per stage, the session and the stage runner."""
