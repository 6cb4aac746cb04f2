"""Every byte we emit: headers, builder, DKIM, spliced digests, subscription mail, signed links."""

from __future__ import annotations
