"""Small helpers shared by several test modules."""


class CountingScore:
    """Counts the calls of a score function, independently of a sampler's own bookkeeping."""

    def __init__(self, score):
        self.score, self.calls = score, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score(x, t)
