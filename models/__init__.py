"""Eddy's pure core: event schemas, profiles, popularity, ranking, datasets.

Nothing in this package does network I/O or imports Faust, Kafka or Redis clients.
"""
