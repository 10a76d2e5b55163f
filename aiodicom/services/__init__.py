"""DIMSE services: Verification, Storage, Query/Retrieve (FIND, GET, MOVE) and the
Relevant Patient Information Query, each with its SCU entry point and SCP driver."""
