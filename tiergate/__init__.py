"""tiergate: move narrow LLM workloads from frontier APIs to small models you own.

Importing the package does no work: no clients, no model loads, no torch.
"""

__version__ = "0.1.0"
