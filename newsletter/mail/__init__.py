"""Every byte we emit: headers and the message builder, DKIM, the spliced per-profile digests."""
