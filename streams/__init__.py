"""Eddy's adapters: the Faust app, topics, agents, codecs, the Redis sink, settings, the CLI."""
