"""ikomm-migrate: moves the users of Lillehammer, Gausdal and Øyer onto the Ikomm platform in waves."""

__version__ = "0.1.0"
