"""BGP announcements of the VIPs (active/active directors behind ECMP routers), spoken by BIRD."""
