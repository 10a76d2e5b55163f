"""The asyncio layer: :class:`~aiodicom.aio.association.Association`, :class:`~aiodicom.aio.server.Server`,
:func:`~aiodicom.aio.client.associate` and :class:`~aiodicom.aio.pool.Pool`."""
