"""Celery workers that own live WhatsApp sessions under tenant leases."""
