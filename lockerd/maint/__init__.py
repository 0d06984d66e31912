"""The technician's side door: a Unix socket in the daemon, and ``lockerctl`` talking to it."""
