"""Who may send what: SPF/DKIM/DMARC, blocklists, reverse DNS, spam scoring, and the TLS policies (DANE, MTA-STS)."""
