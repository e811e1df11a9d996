"""The tasks the engine trains: each a module of its own behind the EngineTask protocol."""
