"""The ``*``/``?`` wildcard both CloudFront policies and Akamai ACLs use."""

from __future__ import annotations


def wildcard_match(pattern: str, text: str) -> bool:
    """``*`` matches any run (``/`` included, also empty), ``?`` exactly one character.

    Iterative two-pointer match, linear-ish and free of regex backtracking blow-ups.
    """
    p = u = 0
    star_p, star_u = -1, 0
    while u < len(text):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[u]):
            p += 1
            u += 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_u = p, u
            p += 1
        elif star_p >= 0:
            p = star_p + 1
            star_u += 1
            u = star_u
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)
