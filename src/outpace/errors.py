class OutpaceError(Exception):
    """Base class of every error outpace raises on bad input; its message is meant for the user."""
