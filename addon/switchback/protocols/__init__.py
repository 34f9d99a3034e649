"""Protocol knowledge: SSE framing, what each event means, and translation
between chat/completions and Responses. Pure: no clock, no I/O."""
