"""How long a peer that beats (an endpoint's heartbeat, a monitor's readings) may say nothing before it counts as gone.

Both ends of a heartbeat use the same figure: the scheduler drops an endpoint after this many silent
intervals, and the endpoint gives up on a scheduler that has been silent as long, so neither waits on the
other longer than the other waits on it.
"""

SILENT_AFTER_INTERVALS = 3
