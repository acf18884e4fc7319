"""The fuzz suite: generated hostile input at every door that takes it.

Every target states one property: an input is accepted, or refused with a reason (a 4xx, a
dead letter, the door's own error type); nothing else is raised, no process dies, and what is
held stays bounded. How many examples each target tries is set in :mod:`tests.fuzz.budget`.
"""
