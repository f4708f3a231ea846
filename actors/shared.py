"""What a million wallets and calls share rather than hold each: one copy of a string, one
empty map."""

from __future__ import annotations

import sys


def one_copy(text):
    """`text` as the one string of its value (`sys.intern`): what a million wallets or calls
    share (a role, a call type, a tier) is held once, not once each. Anything not a string
    comes back as it is, for the check that refuses it."""
    return sys.intern(text) if type(text) is str else text


class Unused(dict):
    """The empty map a wallet holds for what it has never used (calls it pays, idempotency
    keys, pending payouts), shared by all of them: most wallets use one or none, and an empty
    dict of each in every wallet of a million calls is about 350 MB. It refuses to change; a
    wallet takes a map of its own first (`Wallet._own`)."""

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("a wallet's shared empty map: take one of its own first")

    __setitem__ = __delitem__ = setdefault = pop = popitem = clear = update = __ior__ = _refuse

    def __reduce__(self):
        return Unused, ()


UNUSED = Unused()
