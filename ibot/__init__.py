"""iBot: an AI help assistant for Discord forum communities.

Importing this package must stay cheap: no torch, no transformers, no network.
"""

__version__ = "0.1.0"
