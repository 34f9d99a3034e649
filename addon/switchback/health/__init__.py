"""Provider health as policy: rate-limit hints, verdicts on answers, the
cooldown policy, and the answer when everything is spent. Pure: the memory
of it is in `state`."""
