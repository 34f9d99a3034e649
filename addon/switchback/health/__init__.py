"""Provider health: rate-limit hints, verdicts on answers, cooldown policy,
the state that remembers them, and the answer when everything is spent."""
