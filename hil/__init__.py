"""The hardware-in-the-loop simulator: a physical cabinet behind real wire protocols.

It imports nothing from ``lockerd`` or ``drivers``: it is built from the protocol
documents, so that it cannot drift into agreeing with a wrong driver.
"""
