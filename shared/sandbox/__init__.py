"""The sandbox WhatsApp network: a separate process that plays WhatsApp's server rules."""
