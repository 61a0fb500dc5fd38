"""CDN URL-token schemes, sans-I/O: each module signs as the CDN expects and verifies the
same way, so the origin can enforce a CDN's token when it is reached directly and tests can
check round trips. Refusals are the native ``TokenInvalid`` (403) / ``TokenExpired`` (410)."""

from flowcast.protect.tokens import TokenError, TokenExpired, TokenInvalid

__all__ = ["TokenError", "TokenExpired", "TokenInvalid"]
