"""DIMSE message layer (sans-I/O): command sets, PDV reassembly and fragmentation, status codes."""
