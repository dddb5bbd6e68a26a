"""lvs-rs: what a real server needs for direct routing and tunneling (VIP, ARP and rp_filter, decapsulation)."""
