"""The network: the lab's servers and clients (SMTP, IMAP, POP3, DNS), their wire, TLS, guards and faults."""
