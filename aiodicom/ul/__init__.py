"""The PS3.8 upper layer (sans-I/O): PDU codec, state machine, connection core, negotiation."""
