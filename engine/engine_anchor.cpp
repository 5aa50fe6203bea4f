// Keeps the engine library non-empty while it has no other sources of its own.
