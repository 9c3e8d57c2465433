"""Mail itself: the relay queue, the handlers that accept it, the mailboxes, bounces (DSN) and Received hops."""
