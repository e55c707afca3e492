"""Chat-based training simulator for e-commerce after-sales customer service.

The engine (scenarios, conversation loop, customer players, graders, storage) is plain
Python; chat apps and the terminal are thin adapters over :mod:`bot.engine`.
"""

__version__ = "0.1.0"
