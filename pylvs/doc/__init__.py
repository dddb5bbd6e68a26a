"""Man pages and shell completion generated from the parsers of lvsd, lvsadm and lvs-rs."""
