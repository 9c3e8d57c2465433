"""Views of the trace: a message's journey, the condensed conversation, ladder and topology diagrams."""
