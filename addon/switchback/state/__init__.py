"""Learned state: what Switchback has found out and must not forget between
calls — cooldowns and their strikes, key use, protocol memory,
conversations, provider quirks, budget figures. Each kind has its own store
and bound; with Redis, one link shares them all between replicas."""
